//! AdminService: budgets, reconciliation of lost `write` attempts, checkpoints, history
//! verification, import, fork and reset, upgrade checks.

use std::sync::Arc;

use steadfast_engine::event::{self as ev, Event, ReconcileDecision};
use steadfast_engine::state::ActivityPhase;
use steadfast_engine::store::Error as StoreError;
use steadfast_proto::v1 as pb;
use steadfast_proto::v1::admin_service_server::AdminService;
use steadfast_proto::v1::reconcile_activity_request::Decision;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::core::{Core, status};
use crate::service::client::closed_check;
use crate::validate;

/// The admin service.
pub struct AdminApi {
    core: Arc<Core>,
}

impl AdminApi {
    /// Over `core`.
    pub fn new(core: Arc<Core>) -> AdminApi {
        AdminApi { core }
    }
}

/// The new budget: fields given (non-zero) replace the current ones.
pub fn merge_budget(current: ev::Budget, update: &pb::Budget) -> ev::Budget {
    let pick = |new: u64, old: u64| if new > 0 { new } else { old };
    ev::Budget {
        max_tokens: pick(update.max_tokens, current.max_tokens),
        max_cost_micros: pick(update.max_cost_micros, current.max_cost_micros),
        max_activities: pick(update.max_activities, current.max_activities),
        max_duration_ms: pick(update.max_duration_ms, current.max_duration_ms),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn set_task_queue_build(
        &self,
        req: Request<pb::SetTaskQueueBuildRequest>,
    ) -> Result<Response<pb::SetTaskQueueBuildResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        let build = crate::versioning::worker_build("build_id", &r.build_id)?;
        self.core
            .store
            .set_queue_build(&ns, &r.task_queue, build)
            .await
            .map_err(status)?;
        tracing::info!(queue = %r.task_queue, build = build.unwrap_or(""), "task queue build set");
        // Pollers of the new build may take unpinned tasks now.
        self.core
            .notify
            .queue(
                &ns,
                &r.task_queue,
                steadfast_engine::store::TaskKind::Workflow,
            )
            .notify_waiters();
        Ok(Response::new(pb::SetTaskQueueBuildResponse {}))
    }

    async fn describe_task_queue(
        &self,
        req: Request<pb::DescribeTaskQueueRequest>,
    ) -> Result<Response<pb::DescribeTaskQueueResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let ns = validate::namespace(&r.namespace)?;
        validate::name("task_queue", &r.task_queue)?;
        let current = self
            .core
            .store
            .queue_build(&ns, &r.task_queue)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DescribeTaskQueueResponse {
            current_build: current.unwrap_or_default(),
        }))
    }

    async fn update_budget(
        &self,
        req: Request<pb::UpdateBudgetRequest>,
    ) -> Result<Response<pb::UpdateBudgetResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        validate::opt_name("identity", &r.identity)?;
        let update = r.budget.ok_or_else(|| {
            Status::invalid_argument("budget is missing: give at least one ceiling")
        })?;
        let mut result = None;
        self.core
            .update(&key, true, |s, _| {
                closed_check(s, "change the budget of")?;
                let b = merge_budget(s.budget, &update);
                result = Some(b);
                Ok(Some(vec![Event::BudgetUpdated(ev::BudgetUpdated {
                    budget: b,
                    identity: r.identity.clone(),
                })]))
            })
            .await?;
        Ok(Response::new(pb::UpdateBudgetResponse {
            budget: result.as_ref().map(convert::budget),
        }))
    }

    async fn reconcile_activity(
        &self,
        req: Request<pb::ReconcileActivityRequest>,
    ) -> Result<Response<pb::ReconcileActivityResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        validate::opt_name("identity", &r.identity)?;
        let decision = r
            .decision
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("give a decision: retry, complete or fail"))?;
        let complete = match decision {
            Decision::Complete(p) => Some(validate::payload("complete", Some(p))?),
            Decision::Fail(f) => {
                validate::failure("fail", f)?;
                None
            }
            Decision::Retry(_) => None,
        };
        let id = r.activity_id;
        self.core
            .update(&key, true, |s, _| {
                closed_check(s, "reconcile")?;
                let act = s.activities.get(&id).ok_or_else(|| Status::not_found(format!("activity {id} of run {} is not open", key.run_id)))?;
                if !matches!(act.phase, ActivityPhase::OutcomeUnknown { .. }) {
                    return Err(Status::failed_precondition(format!("activity {id} is not waiting for reconciliation (only a lost `write` attempt is)")));
                }
                let e = match decision {
                    Decision::Retry(_) => Event::ActivityReconciled(ev::ActivityReconciled { command_seq: id, decision: ReconcileDecision::Retry, identity: r.identity.clone() }),
                    Decision::Complete(_) => Event::ActivityCompleted(ev::ActivityCompleted {
                        command_seq: id,
                        attempt: act.attempt,
                        result: complete.clone().expect("set above"),
                        duration_ms: 0,
                        usage: None,
                        reconciled: true,
                    }),
                    Decision::Fail(f) => Event::ActivityFailed(ev::ActivityFailed { command_seq: id, attempt: act.attempt, failure: convert::failure_from(f), retry_at_ms: None, duration_ms: 0, usage: None }),
                };
                Ok(Some(vec![e]))
            })
            .await?;
        Ok(Response::new(pb::ReconcileActivityResponse {}))
    }

    async fn checkpoint(
        &self,
        req: Request<pb::CheckpointRequest>,
    ) -> Result<Response<pb::CheckpointResponse>, Status> {
        // The whole store, every namespace's runs: only a token bound to all of them.
        crate::auth::all_namespaces(&req)?;
        let lsn = self.core.store.checkpoint().await.map_err(status)?;
        Ok(Response::new(pb::CheckpointResponse { lsn }))
    }

    async fn import_history(
        &self,
        req: Request<pb::ImportHistoryRequest>,
    ) -> Result<Response<pb::ImportHistoryResponse>, Status> {
        // The target only: the source namespace names where the bundle's chain starts, and
        // nothing is read from it.
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        Ok(Response::new(
            crate::service::import::import(&self.core, req.get_ref()).await?,
        ))
    }

    async fn fork_run(
        &self,
        req: Request<pb::ForkRunRequest>,
    ) -> Result<Response<pb::ForkRunResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        Ok(Response::new(
            crate::service::fork::fork(&self.core, r).await?,
        ))
    }

    async fn check_workflows(
        &self,
        req: Request<pb::CheckWorkflowsRequest>,
    ) -> Result<Response<pb::CheckWorkflowsResponse>, Status> {
        crate::auth::namespace(&req, &req.get_ref().namespace)?;
        Ok(Response::new(
            crate::service::check::check_workflows(&self.core, req.get_ref()).await?,
        ))
    }

    async fn verify_history(
        &self,
        req: Request<pb::VerifyHistoryRequest>,
    ) -> Result<Response<pb::VerifyHistoryResponse>, Status> {
        let r = req.get_ref();
        crate::auth::namespace(&req, &r.namespace)?;
        let key = validate::run_key(&r.namespace, &r.run_id)?;
        let reply = match self.core.store.verify_history(&key).await {
            Ok(v) => pb::VerifyHistoryResponse {
                ok: true,
                events: v.events,
                last_hash: v.last_hash.to_vec(),
                ..Default::default()
            },
            Err(StoreError::Corrupt { run, seq, detail }) => {
                let damaged_run_id = run.as_ref().map_or(String::new(), |k| k.run_id.to_string());
                let e = StoreError::Corrupt { run, seq, detail };
                tracing::warn!(run = %key, error = %e, "history verification found damage");
                pb::VerifyHistoryResponse {
                    ok: false,
                    first_bad_seq: seq.unwrap_or(0),
                    damaged_run_id,
                    detail: e.to_string(),
                    ..Default::default()
                }
            }
            Err(e) => return Err(status(e)),
        };
        Ok(Response::new(reply))
    }
}
