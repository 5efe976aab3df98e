//! Validation of the request fields that are not names, ids or payloads on their own: enums,
//! failures, usage, free text, the commands of a workflow task and a start carried inside a
//! signal. Each is checked before a handler reads the store or parks the call
//! (docs/validation.md has the table, `tests/tests/hostile_fields.rs` the proof).

use steadfast_proto::v1 as pb;
use tonic::Status;
use tonic::codegen::http;

use super::{name, opt_name, payload, quote, run_id, text};

/// An enum field: a number the enum `E` knows, else INVALID_ARGUMENT listing the known ones.
pub fn enumeration<E: TryFrom<i32>>(field: &str, v: i32, known: &str) -> Result<E, Status> {
    E::try_from(v).map_err(|_| {
        Status::invalid_argument(format!("{field} is {v}, which is not one of: {known}"))
    })
}

/// Free text recorded in a history (a failure's message and details, a worker's failure
/// message): any character, bounded by the payload limit since it is stored like one (what is
/// kept may be cut shorter, e.g. a workflow task failure's message).
pub fn free_text(field: &str, v: &str) -> Result<(), Status> {
    let max = crate::limits::current().payload_bytes_max;
    if v.len() as u64 > max {
        return Err(crate::limits::exceeded(
            format_args!("{field} is {} bytes", v.len()),
            "payload_bytes_max",
            max,
        ));
    }
    Ok(())
}

/// A failure reported by a worker or an operator.
pub fn failure(field: &str, f: &pb::Failure) -> Result<(), Status> {
    opt_name(&format!("{field}.type"), &f.r#type)?;
    free_text(&format!("{field}.message"), &f.message)?;
    free_text(&format!("{field}.details"), &f.details)
}

/// An activity's usage: the model is a name.
pub fn usage(field: &str, u: Option<&pb::Usage>) -> Result<(), Status> {
    match u {
        Some(u) => opt_name(&format!("{field}.model"), &u.model),
        None => Ok(()),
    }
}

/// The fields of a start request (StartWorkflow, and the start a SignalRun carries): checked
/// before the workflow id is looked up.
pub fn start_request(r: &pb::StartWorkflowRequest) -> Result<(), Status> {
    super::namespace(&r.namespace)?;
    name("workflow_type", &r.workflow_type)?;
    opt_name("workflow_id", &r.workflow_id)?;
    opt_name("task_queue", &r.task_queue)?;
    opt_name("identity", &r.identity)?;
    opt_name("request_id", &r.request_id)?;
    payload("input", r.input.as_ref()).map(|_| ())
}

/// Every field of every command of a workflow task, checked without the run: names, ids,
/// payloads, enums and texts. What depends on the run (sequence numbers, open activities,
/// limits) is checked when the commands become events.
pub fn commands(cmds: &[pb::Command]) -> Result<(), Status> {
    use pb::command::Command as C;
    // The limit of `commands::to_events`, checked here too so that a hostile list is refused
    // before the token's run is read.
    crate::commands::check_count(cmds.len())?;
    for (i, c) in cmds.iter().enumerate() {
        let at = |f: &str| format!("commands[{i}].{f}");
        let Some(cmd) = &c.command else { continue };
        match cmd {
            C::ScheduleActivity(a) => {
                name(&at("activity_type"), &a.activity_type)?;
                payload(&at("input"), a.input.as_ref())?;
                if let Some(o) = &a.options {
                    opt_name(&at("options.task_queue"), &o.task_queue)?;
                    super::declared_effect(&at("options.effect"), o.effect)?;
                    if let Some(r) = &o.retry {
                        super::type_names(
                            &at("options.retry.non_retryable_error_types"),
                            r.non_retryable_error_types.iter().map(String::as_str),
                        )?;
                    }
                }
            }
            C::StartTimer(_) | C::CancelTimer(_) | C::CancelActivity(_) => {}
            C::WaitSignal(w) => {
                name(&at("name"), &w.name)?;
                text(&at("question"), &w.question)?;
                for (j, choice) in w.choices.iter().enumerate() {
                    text(&at(&format!("choices[{j}]")), choice)?;
                }
            }
            C::ReportProgress(p) => text(&at("message"), &p.message)?,
            C::RecordPartialResult(p) => {
                payload(&at("result"), p.result.as_ref())?;
            }
            C::CompleteRun(c) => {
                payload(&at("result"), c.result.as_ref())?;
            }
            C::FailRun(f) => {
                if let Some(f) = &f.failure {
                    failure(&at("failure"), f)?;
                }
            }
            C::CancelRun(c) => {
                if let Some(p) = &c.partial_result {
                    payload(&at("partial_result"), Some(p))?;
                }
            }
            C::ContinueAsNew(c) => {
                payload(&at("input"), c.input.as_ref())?;
            }
            C::StartChild(s) => {
                name(&at("workflow_type"), &s.workflow_type)?;
                opt_name(&at("workflow_id"), &s.workflow_id)?;
                opt_name(&at("task_queue"), &s.task_queue)?;
                payload(&at("input"), s.input.as_ref())?;
                enumeration::<pb::ChildBudget>(
                    &at("budget_mode"),
                    s.budget_mode,
                    "CHILD_BUDGET_UNSPECIFIED (0), INHERIT (1), SPLIT (2)",
                )?;
                enumeration::<pb::ParentClosePolicy>(
                    &at("parent_close_policy"),
                    s.parent_close_policy,
                    "PARENT_CLOSE_POLICY_UNSPECIFIED (0), CANCEL (1), TERMINATE (2), ABANDON (3)",
                )?;
            }
            C::SignalRun(s) => {
                run_id(&s.run_id)?;
                name(&at("name"), &s.name)?;
                payload(&at("input"), s.input.as_ref())?;
            }
            C::RecordPatch(p) => name(&at("patch_id"), &p.patch_id)?,
            C::UpsertSearchAttributes(u) => {
                crate::convert_search::attributes_from(&u.attributes)
                    .map_err(|e| Status::invalid_argument(format!("{}: {e}", at("attributes"))))?;
            }
            C::CompleteUpdate(u) => {
                name(&at("update_id"), &u.update_id)?;
                payload(&at("result"), u.result.as_ref())?;
            }
            C::RejectUpdate(u) => {
                name(&at("update_id"), &u.update_id)?;
                text(&at("reason"), &u.reason)?;
            }
        }
    }
    Ok(())
}

/// Rewrites tonic's answer to a request that does not decode (a string field that is not
/// UTF-8, a wrong wire type, a cut field) from INTERNAL — which says the server is broken — to
/// INVALID_ARGUMENT: the caller sent a bad message. Only the decoder's refusals are touched:
/// they are trailers-only responses whose message starts with prost's words.
pub fn undecodable(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != tonic::Code::Internal
        || !status
            .message()
            .starts_with("failed to decode Protobuf message")
    {
        return;
    }
    // prost's words name the message and field, never the field's contents.
    let detail: String = status
        .message()
        .trim_start_matches("failed to decode Protobuf message")
        .trim_start_matches(':')
        .trim()
        .chars()
        .take(200)
        .collect();
    let refused = Status::invalid_argument(format!(
        "the request is not a valid protobuf message of this method ({}): a string that is not UTF-8, a wrong wire type or a cut field",
        quote(&detail).trim_matches('"')
    ));
    let _ = refused.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn enums_failures_and_commands() {
        let e = enumeration::<pb::RunStatus>("status", 99, "RUN_STATUS_*").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains("status is 99"), "{}", e.message());
        assert!(enumeration::<pb::RunStatus>("status", 1, "").is_ok());
        let f = pb::Failure {
            r#type: "Bad\u{1b}Type".into(),
            ..Default::default()
        };
        assert!(failure("failure", &f).is_err());
        let f = pb::Failure {
            message: "line one\nline two".into(),
            ..Default::default()
        };
        assert!(failure("failure", &f).is_ok(), "free text holds newlines");
        let cmd = |c| pb::Command {
            seq: 1,
            command: Some(c),
        };
        let bad = cmd(pb::command::Command::RecordPatch(pb::RecordPatchCommand {
            patch_id: "p\u{202E}".into(),
        }));
        let e = commands(&[bad]).unwrap_err();
        assert!(
            e.message().contains("commands[0].patch_id"),
            "{}",
            e.message()
        );
        let child = cmd(pb::command::Command::StartChild(pb::StartChildCommand {
            workflow_type: "child".into(),
            budget_mode: 42,
            ..Default::default()
        }));
        assert!(commands(&[child]).is_err());
    }

    #[test]
    fn decoder_refusals_become_invalid_argument() {
        let mut headers = http::HeaderMap::new();
        Status::internal("failed to decode Protobuf message: X.y: invalid string value: data is not UTF-8 encoded")
            .add_header(&mut headers)
            .unwrap();
        undecodable(&mut headers);
        let s = Status::from_header_map(&headers).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("not UTF-8"), "{}", s.message());
        // A handler's own INTERNAL is left as it is.
        let mut headers = http::HeaderMap::new();
        Status::internal("store broke")
            .add_header(&mut headers)
            .unwrap();
        undecodable(&mut headers);
        let s = Status::from_header_map(&headers).unwrap();
        assert_eq!(s.code(), Code::Internal);
    }
}
