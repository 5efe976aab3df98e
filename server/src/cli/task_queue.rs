//! `steadfast task-queue ...`: a task queue's current build (worker versioning; see the
//! README, "Build ids").

use clap::Subcommand;
use steadfast_proto::v1 as pb;

use super::client::Conn;
use super::{Outcome, note, out_line};

#[derive(Subcommand, Debug)]
pub enum TaskQueueCmd {
    /// Make BUILD the queue's current build: new runs' first workflow tasks and
    /// auto-upgrading runs go to its workers; runs pinned to other builds stay on them.
    SetBuild {
        /// The task queue.
        #[arg(long)]
        task_queue: String,
        /// The build id (what workers declare with STEADFAST_BUILD_ID).
        build: Option<String>,
        /// Clear the current build instead: any worker of the type takes unpinned tasks.
        #[arg(long, conflicts_with = "build")]
        clear: bool,
    },
    /// Print the queue's current build (nothing when none is set).
    Describe {
        /// The task queue.
        #[arg(long)]
        task_queue: String,
    },
}

pub async fn dispatch(conn: &Conn, cmd: TaskQueueCmd) -> Outcome {
    match cmd {
        TaskQueueCmd::SetBuild {
            task_queue,
            build,
            clear,
        } => {
            let Some(build) = build.or(clear.then(String::new)) else {
                return Err(super::Exit::usage(
                    "give the build id (task-queue set-build --task-queue Q BUILD) or --clear",
                ));
            };
            conn.admin()
                .set_task_queue_build(pb::SetTaskQueueBuildRequest {
                    namespace: conn.namespace.clone(),
                    task_queue: task_queue.clone(),
                    build_id: build.clone(),
                })
                .await
                .map_err(|s| conn.status(s))?;
            if build.is_empty() {
                note(&format!(
                    "task queue {task_queue:?} has no current build now"
                ));
            } else {
                note(&format!(
                    "task queue {task_queue:?}: current build {build:?}"
                ));
            }
            Ok(())
        }
        TaskQueueCmd::Describe { task_queue } => {
            let r = conn
                .admin()
                .describe_task_queue(pb::DescribeTaskQueueRequest {
                    namespace: conn.namespace.clone(),
                    task_queue: task_queue.clone(),
                })
                .await
                .map_err(|s| conn.status(s))?
                .into_inner();
            if r.current_build.is_empty() {
                note(&format!(
                    "task queue {task_queue:?} has no current build: any worker of a run's type takes its unpinned tasks"
                ));
                Ok(())
            } else {
                out_line(&format!("current_build {}", r.current_build))
            }
        }
    }
}
