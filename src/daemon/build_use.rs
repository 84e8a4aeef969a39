//! Builds seen in the event stream count as uses of the images they were
//! built on.
//!
//! A `BuildKit` build emits only `image tag` for its result: no container
//! event, nothing naming the base. So when an image event (tag, load, pull,
//! import) names an image the state has never seen, the daemon reads that
//! image's layers (the inspect cache, else one bounded `image_details`
//! call) and counts every image it knows whose layer chain is a proper
//! prefix of the new one's ([`crate::inventory::built_on`]) as used at the
//! event's time, recorded in the state as `build of <short ID>`.
//!
//! The images compared with are those in the inspect cache: every image of
//! the last pass, and those the daemon inspected for events since. A build
//! on a base that appeared before the daemon's first pass is caught by that
//! pass instead, while the built image exists ([`crate::run`] records the
//! build uses its snapshot shows).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::debug;

use crate::engine::{Engine, EngineError};
use crate::events::Update;
use crate::inventory::{built_on, BuildUser, DetailsCache, ShortRef};
use crate::model::short_id;
use crate::run::state::State;

/// An image that appeared through an event, waiting to be compared with the
/// images it may have been built on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewImage {
    /// Its ID.
    pub image_id: String,
    /// When it appeared (the event's time).
    pub at: DateTime<Utc>,
}

/// The new image `u` names, if it is one: an image event (tag, load, pull,
/// import) for an ID the state does not know yet. Ask before the update is
/// applied (applying it makes the ID known).
pub fn new_image(state: &State, u: &Update) -> Option<NewImage> {
    let image_event = matches!(u.by, "tag" | "load" | "pull" | "import");
    (image_event && !state.images.contains_key(&u.image_id)).then(|| NewImage {
        image_id: u.image_id.clone(),
        at: u.at,
    })
}

/// Records in `state` a build use of every image `new` was built on, and
/// returns how many. One `image_details` call at most (none when the image
/// is cached), whose facts are cached for the next pass; an image gone by
/// now, or an engine that fails the call, makes no use (logged at debug).
pub async fn record<E: Engine>(
    engine: &E,
    cache: &mut DetailsCache,
    state: &mut State,
    new: &NewImage,
) -> usize {
    let facts = if let Some(f) = cache.get(&new.image_id) {
        Arc::clone(f)
    } else {
        match engine.image_details(&new.image_id).await {
            Ok(facts) => {
                let facts = Arc::new(facts);
                cache.insert(&new.image_id, Arc::clone(&facts));
                // Read after the event was applied: as fresh as it.
                state.refresh.remove(&new.image_id);
                facts
            }
            Err(EngineError::NotFound(_)) => return 0,
            Err(error) => {
                debug!(image = %new.image_id, %error, "cannot read the layers of a new image; its build uses wait for the next pass");
                return 0;
            }
        }
    };
    let by = BuildUser::Image(ShortRef::new(short_id(&new.image_id))).state_text();
    let bases: Vec<String> = cache
        .iter()
        .filter(|(id, base)| {
            *id != new.image_id
                && state.images.contains_key(*id)
                && built_on(&facts.layers, &base.layers)
        })
        .map(|(id, _)| id.to_owned())
        .collect();
    for base in &bases {
        state.touch(base, new.at, &by);
        debug!(image = %base, by = %by, at = %new.at, "image used by a build");
    }
    bases.len()
}
