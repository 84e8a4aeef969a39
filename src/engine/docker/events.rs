//! Docker's event vocabulary, mapped onto the engine-neutral [`Use`].
//!
//! What the engine (20.10, API 1.41) sends, and what each becomes:
//! - container `create`, `start`, `die`, `destroy`: `Actor.ID` is the
//!   container ID; `Actor.Attributes.image` is the image *as typed* at create
//!   time (`app:1`, a short ID).
//! - image `tag`, `untag`, `load`, `import`, `delete`: `Actor.ID` is the image
//!   ID (`untag` and `load` also put it in `name`; `tag` puts the new
//!   reference there).
//! - image `pull`: `Actor.ID` is the reference pulled (`busybox:latest`).
//!
//! Podman's compatible service (4.3, measured by the matrix's `api`
//! scenario, `tests/fixtures/engines/podman/events.json`) says `remove` where
//! Docker says `destroy` for a container, and `remove` for an image it
//! deleted; it also sends `delete` on a plain untag, which is why an image
//! `delete` is never taken as "the image is gone" (it is no use either way).
//! It gives image IDs without `sha256:`; they are completed here.
//!
//! The stream is asked for exactly these ([`FILTER_ACTIONS`]); anything else
//! that still arrives is dropped here.

use bollard::models::{EventMessage, EventMessageTypeEnum};
use chrono::{DateTime, Utc};

use crate::engine::{ContainerRef, EngineEvent, Use};

/// Every event action the stream is filtered to: the container events that
/// are uses of the container's image, then the image events that put a
/// reference on an image or take one away.
/// `remove` is Podman's word for `destroy` (and for an image deletion);
/// Docker accepts the value and sends no such event.
pub(super) const FILTER_ACTIONS: [&str; 11] = [
    "create", "start", "die", "destroy", "remove", "pull", "tag", "untag", "delete", "load",
    "import",
];

/// The `since` query value for `GET /events`: Unix seconds with nanoseconds,
/// the engine's own `timeNano` precision.
pub(super) fn since_param(time: DateTime<Utc>) -> String {
    format!("{}.{:09}", time.timestamp(), time.timestamp_subsec_nanos())
}

/// An engine event as a [`Use`], or `None` when it is none imagegc follows.
/// The time comes from `timeNano` (`time`, whole seconds, on engines that
/// leave it out).
pub(super) fn engine_event(message: EventMessage) -> Option<EngineEvent> {
    let time = message
        .time_nano
        .map(DateTime::from_timestamp_nanos)
        .or_else(|| message.time.and_then(|s| DateTime::from_timestamp(s, 0)))
        // Every engine since API 1.22 sends both; a missing time must not
        // move `since` backwards, so "now" is the safe stand-in.
        .unwrap_or_else(Utc::now);
    let actor = message.actor.unwrap_or_default();
    let id = actor.id.unwrap_or_default();
    let action = message.action.unwrap_or_default();
    let what = match message.typ {
        Some(EventMessageTypeEnum::CONTAINER) => {
            let container = ContainerRef {
                id,
                image_as_typed: actor.attributes.and_then(|mut a| a.remove("image")),
            };
            match action.as_str() {
                "create" => Use::ContainerCreated(container),
                "start" => Use::ContainerStarted(container),
                "die" => Use::ContainerDied(container),
                "destroy" | "remove" => Use::ContainerDestroyed(container),
                _ => return None,
            }
        }
        Some(EventMessageTypeEnum::IMAGE) => match (action.as_str(), super::full_id(id)) {
            ("pull", reference) => Use::ImagePulled { reference },
            ("tag", image) => Use::ImageTagged { image },
            ("untag", image) => Use::ImageUntagged { image },
            ("load", image) => Use::ImageLoaded { image },
            ("import", image) => Use::ImageImported { image },
            ("delete" | "remove", image) => Use::ImageDeleted { image },
            // save, push, prune: no use.
            _ => return None,
        },
        _ => return None,
    };
    Some(EngineEvent { time, what })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_sent_in_unix_seconds_with_nanoseconds() {
        let time = DateTime::from_timestamp_nanos(1_795_827_421_005_985_018);
        assert_eq!(since_param(time), "1795827421.005985018");
        let whole = DateTime::from_timestamp_nanos(1_795_827_421_000_000_000);
        assert_eq!(since_param(whole), "1795827421.000000000");
    }

    #[test]
    fn container_events_of_engine_20_10_carry_the_image_as_typed() {
        // As `docker events` printed it on 20.10.24 (legacy fields included).
        let line = r#"{"status":"create","id":"f7c1","from":"app:1","Type":"container",
            "Action":"create","Actor":{"ID":"f7c1","Attributes":{"image":"app:1",
            "name":"bold_ritchie"}},"scope":"local","time":1795827421,
            "timeNano":1795827421123328827}"#;
        let message: EventMessage = serde_json::from_str(line).unwrap_or_default();
        let event = engine_event(message).expect("a container create is a use");
        assert_eq!(
            event.what,
            Use::ContainerCreated(ContainerRef {
                id: "f7c1".to_owned(),
                image_as_typed: Some("app:1".to_owned()),
            })
        );
        assert_eq!(
            event.time.timestamp_nanos_opt(),
            Some(1_795_827_421_123_328_827)
        );
    }

    #[test]
    fn untag_events_of_engine_20_10_carry_the_image_id_as_actor_and_name() {
        let line = r#"{"status":"untag","id":"sha256:0d24","Type":"image","Action":"untag",
            "Actor":{"ID":"sha256:0d24","Attributes":{"name":"sha256:0d24"}},
            "scope":"local","time":1795827421,"timeNano":1795827421087881993}"#;
        let message: EventMessage = serde_json::from_str(line).unwrap_or_default();
        let event = engine_event(message).expect("an untag is an event");
        assert_eq!(
            event.what,
            Use::ImageUntagged {
                image: "sha256:0d24".to_owned()
            }
        );
    }

    #[test]
    fn podman_says_remove_for_a_container_and_names_images_by_bare_hex() {
        // As Podman 4.3's compatible service sent them (tests/fixtures/engines/podman).
        let remove = r#"{"status":"remove","id":"e85b","Type":"container","Action":"remove",
            "Actor":{"ID":"e85b","Attributes":{"image":"localhost/app:1","name":"happy_allen"}},
            "scope":"local","time":1796205750,"timeNano":1796205750678838755}"#;
        let message: EventMessage = serde_json::from_str(remove).unwrap_or_default();
        assert_eq!(
            engine_event(message).map(|e| e.what),
            Some(Use::ContainerDestroyed(ContainerRef {
                id: "e85b".to_owned(),
                image_as_typed: Some("localhost/app:1".to_owned()),
            }))
        );
        let hex = "3f157876135c3f157876135c3f157876135c3f157876135c3f157876135cabcd";
        let untag = format!(
            r#"{{"status":"untag","id":"{hex}","Type":"image","Action":"untag",
            "Actor":{{"ID":"{hex}","Attributes":{{"name":"localhost/app:1"}}}},
            "scope":"local","time":1796205785,"timeNano":1796205785145264393}}"#
        );
        let message: EventMessage = serde_json::from_str(&untag).unwrap_or_default();
        assert_eq!(
            engine_event(message).map(|e| e.what),
            Some(Use::ImageUntagged {
                image: format!("sha256:{hex}")
            })
        );
    }

    #[test]
    fn a_pull_names_the_reference_pulled() {
        let line = r#"{"status":"pull","id":"busybox:latest","Type":"image","Action":"pull",
            "Actor":{"ID":"busybox:latest","Attributes":{"name":"busybox"}},
            "scope":"local","time":1795827421,"timeNano":1795827421087881993}"#;
        let message: EventMessage = serde_json::from_str(line).unwrap_or_default();
        assert_eq!(
            engine_event(message).map(|e| e.what),
            Some(Use::ImagePulled {
                reference: "busybox:latest".to_owned()
            })
        );
    }

    #[test]
    fn events_without_nanoseconds_fall_back_to_whole_seconds() {
        let message = EventMessage {
            typ: Some(EventMessageTypeEnum::IMAGE),
            action: Some("delete".to_owned()),
            time: Some(1_795_827_421),
            ..EventMessage::default()
        };
        let event = engine_event(message).expect("a delete is an event");
        assert_eq!(event.time.timestamp(), 1_795_827_421);
        assert_eq!(event.time.timestamp_subsec_nanos(), 0);
    }

    #[test]
    fn events_imagegc_does_not_follow_are_dropped() {
        for (typ, action) in [
            (EventMessageTypeEnum::NETWORK, "connect"),
            (EventMessageTypeEnum::IMAGE, "push"),
            (EventMessageTypeEnum::CONTAINER, "exec_start"),
        ] {
            let message = EventMessage {
                typ: Some(typ),
                action: Some(action.to_owned()),
                time: Some(1_795_827_421),
                ..EventMessage::default()
            };
            assert_eq!(engine_event(message), None, "{action}");
        }
    }
}
