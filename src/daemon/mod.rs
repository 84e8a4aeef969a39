//! The long-running service: triggers and passes, state upkeep, reload,
//! shutdown; and [`serve`], the wiring around it that `imagegc run` uses
//! (metrics endpoint, `READY=1`, engine connection with backoff).
//!
//! One task owns the policy, the inspect cache and the state. It waits for
//! the next trigger ([`triggers`]: the schedule, `run_on_start`, or a source
//! that sends one), runs a pass (passes never overlap: they run inline),
//! applies last-use updates that the event follower sends, writes the state
//! at most every few seconds while updates arrive, reloads the policy on
//! request, and pings the systemd watchdog from this same loop, so a hung
//! loop is a missed ping. Sleeps are cut into short slices and the wall clock
//! is read again on every wake, so a suspend or a clock jump delays nothing
//! by more than one slice.
//!
//! Everything it touches is passed in (engine, clock, metrics, notifier,
//! shutdown token), so tests drive it with a fake engine and paused time.

pub mod build_use;
pub mod clock;
pub mod notify;
pub mod pressure;
pub mod reload;
pub mod signals;
pub mod triggers;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::engine::{Engine, EngineError};
use crate::events::{self, Update};
use crate::host::disk::{DiskProbe, Statvfs};
use crate::inventory::CollectNeeds;
use crate::policy::Policy;
use crate::run::state::State;
use crate::run::{self, Memory, Mode, Outcome, PassOutcome, PassSummary};
use crate::sources::PolicySource;
use crate::telemetry::Metrics;

#[cfg(feature = "test-support")]
pub use clock::TokioClock;
pub use clock::{Clock, SystemClock};
pub use notify::{Notifier, SystemdNotifier};
pub use reload::describe_changes;
pub use triggers::{Trigger, TriggerReceiver, TriggerSender, Triggers};

/// Default [`Daemon::pass_stall`].
pub const DEFAULT_PASS_STALL: Duration = Duration::from_secs(300);

/// Requests from outside the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Re-read the policy file (SIGHUP).
    Reload,
}

/// A finished pass, for observers (tests, logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassRecord {
    /// What started the pass.
    pub trigger: Trigger,
    /// When the pass started, by the daemon's clock.
    pub started: DateTime<Utc>,
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// How it ended.
    pub outcome: PassOutcome,
    /// Removals carried out.
    pub removed: usize,
    /// The policy source and rule names in force.
    pub policies: Vec<String>,
}

/// How the daemon is wired.
pub struct Daemon<E: Engine + 'static> {
    /// The engine to clean.
    pub engine: Arc<E>,
    /// Where the policy is re-read from on reload.
    pub source: PolicySource,
    /// The policy in force.
    pub policy: Policy,
    /// Metric handles.
    pub metrics: Arc<Metrics>,
    /// Wall clock.
    pub clock: Arc<dyn Clock>,
    /// systemd notifications.
    pub notifier: Arc<dyn Notifier>,
    /// Longest sleep between wall-clock checks (and watchdog pings when
    /// systemd asks for none). Default 30 s.
    pub max_sleep: Duration,
    /// Least time between two state writes while events arrive. Default 5 s.
    pub save_every: Duration,
    /// Follow engine events for last-use times. Default true.
    pub follow_events: bool,
    /// Told about every finished pass.
    pub on_pass: Option<mpsc::UnboundedSender<PassRecord>>,
    /// Triggers from sources outside the daemon (a disk-pressure poller);
    /// `None` means the schedule, `run_on_start` and the disk-pressure
    /// sampler only. Default `None`.
    pub triggers: Option<TriggerReceiver>,
    /// How the disk under the engine's root dir is read, by passes and by
    /// the disk-pressure sampler. Default statvfs.
    pub disk: Arc<dyn DiskProbe>,
    /// Longest a pass may go without any engine call finishing. Past it the
    /// watchdog is no longer fed and the pass is abandoned as failed, which
    /// `/healthz` reports until a pass succeeds. Every engine call has a
    /// deadline of its own, so this only trips on a hang those miss; keep it
    /// above the engine call deadline. Default 5 min.
    pub pass_stall: Duration,
}

impl<E: Engine + 'static> Daemon<E> {
    /// A daemon with production defaults for everything but the engine,
    /// policy and metrics. `config_path` is the policy file to re-read on
    /// reload; `None` means the built-in policy (which adopts a file that
    /// appears at the default path). Set [`Daemon::source`] for any other.
    pub fn new(
        engine: Arc<E>,
        config_path: Option<PathBuf>,
        policy: Policy,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            engine,
            source: PolicySource::from(config_path),
            policy,
            metrics,
            clock: Arc::new(SystemClock),
            notifier: Arc::new(SystemdNotifier),
            max_sleep: Duration::from_secs(30),
            save_every: Duration::from_secs(5),
            follow_events: true,
            on_pass: None,
            triggers: None,
            disk: Arc::new(Statvfs),
            pass_stall: DEFAULT_PASS_STALL,
        }
    }

    /// Run until `shutdown` is cancelled. `controls` carries reload requests.
    /// Returns after the state has been written.
    pub async fn run(
        mut self,
        mut controls: mpsc::UnboundedReceiver<Control>,
        shutdown: CancellationToken,
    ) {
        let outside = self.triggers.take();
        let mut lp = Loop::start(self, &shutdown).await;
        let (tx, mut updates) = mpsc::unbounded_channel::<Update>();
        let tracker = tokio_util::task::TaskTracker::new();
        let pushed = lp.trigger_sources(outside, &tracker, &shutdown);
        if lp.d.follow_events {
            let engine = Arc::clone(&lp.d.engine);
            let metrics = Arc::clone(&lp.d.metrics);
            tracker.spawn(events::follow(
                engine,
                tx,
                shutdown.child_token(),
                move |up| {
                    metrics.set_engine_up(up);
                },
            ));
        } else {
            drop(tx);
        }
        tracker.close();
        let mut triggers = Triggers::new(&lp.d.policy, lp.d.clock.now(), Some(pushed));
        let mut save_at: Option<Instant> = None;
        let mut controls_open = true;
        let mut updates_open = true;
        loop {
            let now = lp.d.clock.now();
            if let Some(trigger) = triggers.due(now) {
                if triggers::is_pressure(trigger) && lp.gate.cooling(Instant::now()) {
                    lp.gate.served();
                    debug!(
                        trigger = trigger.label(),
                        "pressure pass not started: cooling down after one that could not reach disk_low"
                    );
                    continue;
                }
                lp.pass(trigger, &shutdown).await;
                if triggers::is_pressure(trigger) {
                    Box::pin(lp.after_pressure_pass()).await;
                }
                if shutdown.is_cancelled() {
                    break;
                }
                triggers.rearm(&lp.d.policy, lp.d.clock.now());
                triggers.coalesce();
                continue;
            }
            let until_fire = triggers.until_next(now).unwrap_or(lp.d.max_sleep);
            let slice = until_fire.min(lp.tick());
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(slice) => lp.d.notifier.watchdog(),
                () = triggers.recv() => {}
                ctrl = controls.recv(), if controls_open => match ctrl {
                    Some(Control::Reload) => {
                        if lp.reload() {
                            triggers.rearm(&lp.d.policy, lp.d.clock.now());
                            lp.publish_watch();
                        }
                    }
                    None => controls_open = false,
                },
                update = updates.recv(), if updates_open => match update {
                    Some(u) => {
                        if adds_data(u.by) {
                            lp.poke.notify_one();
                        }
                        let new = lp.apply(&u);
                        drop(u);
                        if let Some(new) = new {
                            lp.poke.notify_one();
                            // On the heap: the loop's own future stays small.
                            Box::pin(lp.record_build(new, &shutdown)).await;
                        }
                        save_at.get_or_insert_with(|| Instant::now() + lp.d.save_every);
                    }
                    None => updates_open = false,
                },
                () = sleep_until_opt(save_at) => {
                    lp.save();
                    save_at = None;
                }
            }
        }
        lp.d.notifier.stopping();
        info!("shutting down: stopping the event follower and writing the state");
        tracker.wait().await;
        while let Ok(u) = updates.try_recv() {
            lp.apply(&u);
        }
        lp.save();
        info!("stopped");
    }
}

/// What [`serve`] wires around the daemon.
pub struct Wiring {
    /// The policy the daemon starts with.
    pub policy: Policy,
    /// Where it came from, to re-read on reload.
    pub source: PolicySource,
    /// Metric handles, shared by the endpoint and the daemon.
    pub metrics: Arc<Metrics>,
    /// systemd notifications, shared by start-up and the daemon.
    pub notifier: Arc<dyn Notifier>,
    /// The metrics endpoint's listener, already bound (a bind failure is
    /// the caller's to report); `None` when `[metrics]` is disabled.
    pub listener: Option<tokio::net::TcpListener>,
    /// Reload requests (SIGHUP).
    pub controls: mpsc::UnboundedReceiver<Control>,
}

/// `imagegc run` once the policy is loaded and the listener bound: serves
/// `/metrics` and `/healthz`, says `READY=1`, connects with `connect`
/// (retried with backoff, feeding the watchdog, until `shutdown`), then runs
/// the daemon: the wiring's policy, source, metrics and notifier with the
/// engine and production defaults, adjusted by `configure`. Returns once the
/// daemon has written its state and the endpoint has stopped.
pub async fn serve<E, C, F>(
    wiring: Wiring,
    mut connect: C,
    configure: impl FnOnce(Daemon<E>) -> Daemon<E>,
    shutdown: CancellationToken,
) where
    E: Engine + 'static,
    C: FnMut() -> F,
    F: std::future::Future<Output = Result<E, EngineError>>,
{
    let Wiring {
        policy,
        source,
        metrics,
        notifier,
        listener,
        controls,
    } = wiring;
    let server = listener.map(|listener| {
        if let Ok(at) = listener.local_addr() {
            info!(listen = %at, "metrics on /metrics, health on /healthz");
        }
        tokio::spawn(crate::telemetry::http::serve(
            listener,
            Arc::clone(&metrics),
            shutdown.clone(),
        ))
    });
    notifier.ready();
    info!(policy = %policy.source, schedule = %policy.schedule, timezone = %policy.timezone, policies = policy.rules.len(), "imagegc started");

    let tick = watchdog_tick(&*notifier, Duration::from_secs(30));
    let mut backoff = Duration::from_millis(500);
    let engine = loop {
        // A silent engine must not keep SIGTERM waiting for the deadline,
        // nor starve the watchdog while one attempt waits for it.
        let attempt = tokio::select! {
            attempt = connect() => attempt,
            () = shutdown.cancelled() => break None,
            () = ping_forever(&*notifier, tick) => unreachable!("pings never end"),
        };
        match attempt {
            Ok(engine) => break Some(engine),
            Err(e) => {
                metrics.set_engine_up(false);
                warn!(error = %e, retry_in = ?backoff, "engine unreachable; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => break None,
                    () = tokio::time::sleep(backoff) => notifier.watchdog(),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    };
    if let Some(engine) = engine {
        let mut daemon = Daemon::new(Arc::new(engine), None, policy, Arc::clone(&metrics));
        daemon.source = source;
        daemon.notifier = Arc::clone(&notifier);
        configure(daemon).run(controls, shutdown.clone()).await;
    }
    shutdown.cancel();
    if let Some(server) = server {
        match server.await {
            Ok(Err(e)) => warn!(error = %e, "metrics endpoint stopped with an error"),
            Err(e) => warn!(error = %e, "metrics endpoint task failed"),
            Ok(Ok(())) => {}
        }
    }
}

/// How often to ping the watchdog: half the interval systemd asks for, at
/// most `max`, at least 10 ms.
fn watchdog_tick(notifier: &dyn Notifier, max: Duration) -> Duration {
    let mut tick = max;
    if let Some(w) = notifier.watchdog_interval() {
        tick = tick.min(w / 2);
    }
    tick.max(Duration::from_millis(10))
}

/// Pings the watchdog every `tick`; never returns.
async fn ping_forever(notifier: &dyn Notifier, tick: Duration) {
    loop {
        tokio::time::sleep(tick).await;
        notifier.watchdog();
    }
}

/// Whether a use the event follower reports (`Update::by`) is one that
/// adds data to the engine's disk: the disk-pressure sampler looks at once.
fn adds_data(by: &str) -> bool {
    matches!(by, "container create" | "pull" | "load" | "import" | "tag")
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The loop's own state.
struct Loop<E: Engine + 'static> {
    d: Daemon<E>,
    memory: Memory,
    root_dir: Option<String>,
    last_status: String,
    /// Why the last reload was refused, until a reload succeeds: STATUS=
    /// leads with it, since `systemctl reload` itself reports success.
    reload_rejected: Option<String>,
    /// The last state write failed (logged once, not at every attempt).
    save_failing: bool,
    /// When an engine call outside a pass (start-up reads, connects, the
    /// gauges' refresh) last finished: the watchdog is fed during those
    /// only while calls keep finishing, as during a pass.
    progress: Arc<Progress>,
    /// What the disk-pressure sampler watches: the policy's percentage
    /// watermarks at the engine's root dir, once known and on this host.
    watch: tokio::sync::watch::Sender<Option<pressure::Watch>>,
    /// Tells the sampler to look now (an event that adds data).
    poke: Arc<tokio::sync::Notify>,
    /// Shared with the sampler: one pressure pass asked at a time, cooldown.
    gate: Arc<pressure::Gate>,
    /// When the first removal of the last pass finished.
    first_removal: Option<Instant>,
}

impl<E: Engine + 'static> Loop<E> {
    /// The engine, with every finished call noted in `progress`.
    fn watched(&self) -> Watched<'_, E> {
        Watched {
            inner: &*self.d.engine,
            progress: &self.progress,
        }
    }

    /// What feeds the watchdog while engine work outside a pass runs:
    /// pings while calls keep finishing, and returns (with how long none
    /// finished) once none did for `pass_stall`.
    fn feeder(&self) -> impl std::future::Future<Output = Duration> + use<E> {
        let notifier = Arc::clone(&self.d.notifier);
        let progress = Arc::clone(&self.progress);
        let (tick, stall) = (self.tick(), self.d.pass_stall);
        progress.touch();
        async move { keep_alive(&*notifier, &progress, tick, stall).await }
    }

    async fn start(d: Daemon<E>, shutdown: &CancellationToken) -> Self {
        let now = d.clock.now();
        let path = d.policy.state.path.clone();
        let state = State::load_or_fresh(&path, now);
        d.metrics.set_policy(&d.policy);
        let disk = Arc::clone(&d.disk);
        let mut lp = Self {
            d,
            // The build cache is read every pass, so its gauges show what
            // it holds whatever the policy collects.
            memory: Memory::new(state)
                .with_disk_probe(disk)
                .with_needs(CollectNeeds {
                    build_cache: true,
                    ..CollectNeeds::IMAGES_ONLY
                }),
            root_dir: None,
            last_status: String::from("no pass yet"),
            reload_rejected: None,
            save_failing: false,
            progress: Arc::new(Progress::new()),
            watch: tokio::sync::watch::Sender::new(None),
            poke: Arc::new(tokio::sync::Notify::new()),
            gate: Arc::new(pressure::Gate::default()),
            first_removal: None,
        };
        // Every wait here gives way to shutdown: an engine that accepts but
        // never answers must not keep SIGTERM waiting for call deadlines.
        // The watchdog is fed while the start-up reads make progress (a host
        // with thousands of containers takes a while); reads that stall are
        // given up, and the first pass tries again.
        let feeder = lp.feeder();
        tokio::select! {
            () = async {
                if lp.connect().await {
                    lp.reconcile().await;
                }
            } => {}
            () = shutdown.cancelled() => {}
            quiet = feeder => warn!(
                stalled_for = %humantime::format_duration(Duration::from_secs(quiet.as_secs())),
                "start-up: no engine call finished for a long time; giving up the start-up reads"
            ),
        }
        let waiting = format!("waiting; {}", lp.last_status);
        lp.publish_status(&waiting);
        lp
    }

    /// Learn the engine's root dir; `engine_up` follows.
    async fn connect(&mut self) -> bool {
        if self.root_dir.is_some() {
            return true;
        }
        let info = self.watched().info().await;
        match info {
            Ok(info) => {
                info!(version = %info.server_version, api = %info.api_version, root_dir = %info.root_dir, "engine answers");
                self.root_dir = Some(info.root_dir);
                self.d.metrics.set_engine_up(true);
                self.publish_watch();
                true
            }
            Err(e) => {
                warn!(error = %e, "engine does not answer; will retry at the next pass");
                self.d.metrics.set_engine_up(false);
                false
            }
        }
    }

    /// Seed last-use times from the containers present, and take the
    /// baseline of a fresh state so a new install can clean up at once.
    async fn reconcile(&mut self) {
        let now = self.d.clock.now();
        if self.memory.state.baseline_pending {
            let images = self.watched().list_images().await;
            if let Ok(images) = images {
                self.memory
                    .state
                    .observe(images.iter().map(|i| i.id.as_str()), now);
                info!(
                    images = images.len(),
                    "state: baseline taken; these images count as old"
                );
            }
        }
        let reconciled = events::reconcile(&self.watched()).await;
        match reconciled {
            Ok(updates) => {
                for u in &updates {
                    self.apply(u);
                }
                debug!(
                    updates = updates.len(),
                    "last-use times reconciled from containers"
                );
            }
            Err(e) => warn!(error = %e, "cannot reconcile last-use times from containers"),
        }
        let orphans = run::find_orphans(&self.watched(), None, &[]).await;
        match orphans {
            Ok(orphans) => {
                run::log_orphans(&orphans);
                self.d.metrics.set_orphaned_containers(orphans.len());
            }
            Err(e) => warn!(error = %e, "cannot check for containers whose image is gone"),
        }
        self.save();
    }

    /// STATUS= for `systemctl status`: `text`, after a rejected reload if
    /// the file in force is not the file on disk.
    fn publish_status(&self, text: &str) {
        match &self.reload_rejected {
            Some(rejected) => self.d.notifier.status(&format!("{rejected}; {text}")),
            None => self.d.notifier.status(text),
        }
    }

    fn tick(&self) -> Duration {
        watchdog_tick(&*self.d.notifier, self.d.max_sleep)
    }

    /// Starts what sends triggers besides the schedule: the disk-pressure
    /// sampler, and a forwarder for `outside` sources; one channel for all.
    fn trigger_sources(
        &self,
        outside: Option<TriggerReceiver>,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
    ) -> TriggerReceiver {
        let (sender, pushed) = triggers::channel();
        if let Some(mut outside) = outside {
            // Sources outside the daemon and the sampler feed one channel.
            let sender = sender.clone();
            let stop = shutdown.child_token();
            tracker.spawn(async move {
                while let Some(Some(trigger)) = stop.run_until_cancelled(outside.recv()).await {
                    if !sender.send(trigger) {
                        break;
                    }
                }
            });
        }
        tracker.spawn(pressure::sample(
            Arc::clone(&self.memory.disk),
            self.watch.subscribe(),
            Arc::clone(&self.poke),
            Arc::clone(&self.gate),
            sender,
            shutdown.child_token(),
        ));
        self.publish_watch();
        pushed
    }

    /// Tells the sampler what to watch now: the policy's percentage disk
    /// watermarks and inode watermarks at the engine's root dir, when it is known and on this
    /// host; nothing otherwise.
    fn publish_watch(&self) {
        let watch = self
            .root_dir
            .as_deref()
            .filter(|_| self.d.engine.capabilities().root_dir_on_host)
            .and_then(|dir| pressure::Watch::of(&self.d.policy, dir));
        self.watch.send_if_modified(|current| {
            if *current == watch {
                return false;
            }
            match &watch {
                Some(w) => info!(
                    root_dir = %w.root_dir,
                    interval = %humantime::format_duration(w.interval),
                    policies = w.marks.len(),
                    "watching the disk for pressure between passes"
                ),
                None if current.is_some() => info!("no longer watching the disk for pressure"),
                None => {}
            }
            *current = watch;
            true
        });
    }

    /// After a pass a pressure trigger started: its reaction time, and
    /// whether it reached `disk_low` and `inodes_low`. A look at the disk
    /// still above a low mark of a policy that crossed a high one means
    /// there was nothing more to remove (or, for inodes, the planner's
    /// estimate fell short): no pressure pass for `[pressure] cooldown`.
    async fn after_pressure_pass(&mut self) {
        let (crossed_at, crossed) = self.gate.served();
        if let (Some(crossed_at), Some(removed_at)) = (crossed_at, self.first_removal) {
            self.d
                .metrics
                .observe_pressure_reaction(removed_at.saturating_duration_since(crossed_at));
        }
        let Some(watch) = self.watch.borrow().clone() else {
            return;
        };
        let Some(usage) = crate::host::disk::usage_of(&self.memory.disk, &watch.root_dir).await
        else {
            return;
        };
        if watch.above_low_of(&usage, &crossed) {
            self.gate.cool_until(Instant::now() + watch.cooldown);
            warn!(
                used_ratio = usage.used_ratio(),
                inodes_used_ratio = usage.inodes_used_ratio(),
                policies = %crossed.join(", "),
                cooldown = %humantime::format_duration(watch.cooldown),
                "the pressure pass could not bring the disk down to disk_low (or inodes_low); no \
                 pressure pass before the cooldown has passed"
            );
        }
    }

    /// Apply `u` to the state; the new image it names, if any, for
    /// [`Loop::record_build`].
    fn apply(&mut self, u: &Update) -> Option<build_use::NewImage> {
        let new = build_use::new_image(&self.memory.state, u);
        self.memory.state.touch(&u.image_id, u.at, u.by);
        new
    }

    /// Count the build that made `new` as a use of the images it was built
    /// on ([`build_use`]). The engine call this may take (one bounded
    /// `image_details`) feeds the watchdog while it finishes, and gives
    /// way to shutdown.
    async fn record_build(&mut self, new: build_use::NewImage, shutdown: &CancellationToken) {
        let feeder = self.feeder();
        let engine = Watched {
            inner: &*self.d.engine,
            progress: &self.progress,
        };
        let (cache, state) = (&mut self.memory.cache, &mut self.memory.state);
        tokio::select! {
            _ = build_use::record(&engine, cache, state, &new) => {}
            () = shutdown.cancelled() => {}
            _ = feeder => debug!(image = %new.image_id, "reading the layers of a new image made no progress; given up"),
        }
    }

    /// Write the state; a failure is logged when it starts and when it ends,
    /// not at every attempt (an unwritable path would flood the log).
    fn save(&mut self) {
        let path = &self.d.policy.state.path;
        match self.memory.state.save(path) {
            Ok(()) if self.save_failing => {
                info!(path = %path.display(), "state file written again");
                self.save_failing = false;
            }
            Ok(()) => {}
            Err(e) if !self.save_failing => {
                warn!(error = %e, "cannot write the state file; first-seen and last-used times will not survive a restart");
                self.save_failing = true;
            }
            Err(e) => debug!(error = %e, "state file still not writable"),
        }
    }

    /// One pass, its metrics, its log line and its status.
    async fn pass(&mut self, trigger: Trigger, shutdown: &CancellationToken) {
        let started = self.d.clock.now();
        let clock_start = Instant::now();
        let mode = if self.d.policy.dry_run {
            Mode::DryRun
        } else {
            Mode::Execute
        };
        debug!(trigger = trigger.label(), "pass starting");
        self.first_removal = None;
        let (result, stalled) = self.run_watched(shutdown, mode, started).await;
        let duration = clock_start.elapsed();
        let finished = self.d.clock.now();
        if let Some(Ok(Outcome {
            orphans: Some(orphans),
            ..
        })) = &result
        {
            self.d.metrics.set_orphaned_containers(orphans.len());
        }
        let summary = match &result {
            Some(Ok(o)) => PassSummary::of(trigger, o, started, finished, duration),
            _ => PassSummary::failed(trigger, started, finished, duration),
        };
        let trigger = trigger.label();
        match &result {
            Some(Ok(o)) => {
                if o.report.as_ref().is_some_and(|r| r.engine_lost) {
                    self.d.metrics.set_engine_up(false);
                    self.root_dir = None;
                }
            }
            None if stalled.is_some() => {}
            Some(Err(e)) => {
                error!(trigger, error = %e, "pass failed");
                if e.is_unreachable() {
                    self.d.metrics.set_engine_up(false);
                    self.root_dir = None;
                }
            }
            None if shutdown.is_cancelled() => error!(
                trigger,
                "pass abandoned: the engine did not answer within the shutdown grace time"
            ),
            None => error!(trigger, "pass failed: the engine is unreachable"),
        }
        summary.log();
        let report = match &result {
            Some(Ok(o)) => o.report.as_ref(),
            _ => None,
        };
        self.d.metrics.record_summary(&summary, report);
        if let (None, Some(quiet)) = (&result, stalled) {
            self.record_stalled(trigger, quiet, finished);
        }
        self.last_status = summary.status_line();
        self.publish_status(&self.last_status);
        self.save();
        match &result {
            // Nothing was removed: the pass's own snapshot and plan are current.
            Some(Ok(o)) if o.report.as_ref().is_none_or(|r| r.removed.is_empty()) => {
                self.d.metrics.record_inventory(&o.snapshot, &o.plan);
            }
            _ if summary.outcome != PassOutcome::Cancelled && !shutdown.is_cancelled() => {
                let feeder = self.feeder();
                tokio::select! {
                    () = Box::pin(self.refresh_inventory()) => {}
                    () = shutdown.cancelled() => {}
                    _ = feeder => debug!("the gauges' refresh made no progress; given up"),
                }
            }
            _ => {}
        }
        if let Some(tx) = &self.d.on_pass {
            let _ = tx.send(PassRecord {
                trigger: summary.trigger,
                started,
                finished,
                outcome: summary.outcome,
                removed: summary.removed(),
                policies: self.d.policy.rules.iter().map(|r| r.name.clone()).collect(),
            });
        }
    }

    /// Connects if need be and runs the pass, watched: `None` when it could
    /// not run or was abandoned (at shutdown, or stuck: then with how long
    /// no engine call had finished).
    async fn run_watched(
        &mut self,
        shutdown: &CancellationToken,
        mode: Mode,
        started: DateTime<Utc>,
    ) -> (Option<Result<Outcome, EngineError>>, Option<Duration>) {
        let tick = self.tick();
        let feeder = self.feeder();
        let connected = tokio::select! {
            connected = self.connect() => connected,
            () = shutdown.cancelled() => false,
            _ = feeder => false,
        };
        let mut stalled = None;
        let result = if connected {
            let progress = Progress::new();
            let engine = Watched {
                inner: &*self.d.engine,
                progress: &progress,
            };
            // On the heap: the daemon's own future stays small.
            let outcome = Box::pin(run::run(
                &engine,
                &self.d.policy,
                self.root_dir.as_deref(),
                &mut self.memory,
                mode,
                started,
                shutdown,
            ));
            // Shutdown lets a removal in flight finish; a pass stuck on a
            // silent engine is abandoned after a grace time.
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(Duration::from_secs(8)).await;
            };
            // A long pass keeps the watchdog fed while engine calls keep
            // finishing; one that makes no progress for `pass_stall` stops
            // the pings and is abandoned.
            let keepalive = keep_alive(&*self.d.notifier, &progress, tick, self.d.pass_stall);
            let result = tokio::select! {
                r = outcome => Some(r),
                () = grace => None,
                quiet = keepalive => {
                    stalled = Some(quiet);
                    None
                }
            };
            self.first_removal = progress.first_removal();
            result
        } else {
            None
        };
        (result, stalled)
    }

    /// A pass abandoned because no engine call finished for `quiet`: said
    /// in the log and kept for `/healthz` (after the pass was counted).
    fn record_stalled(&self, trigger: &str, quiet: Duration, finished: DateTime<Utc>) {
        let quiet = humantime::format_duration(Duration::from_secs(quiet.as_secs()));
        error!(
            trigger,
            stalled_for = %quiet,
            "pass abandoned: no engine call finished for {quiet}; the engine or its disk seems hung"
        );
        self.d.metrics.record_stall(&format!(
            "the last pass was abandoned at {}: no engine call finished for {quiet}",
            finished.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }

    /// Image gauges and what the next pass would free, after this pass.
    async fn refresh_inventory(&mut self) {
        let now = self.d.clock.now();
        let never = CancellationToken::new();
        let engine = Watched {
            inner: &*self.d.engine,
            progress: &self.progress,
        };
        match run::run(
            &engine,
            &self.d.policy,
            self.root_dir.as_deref(),
            &mut self.memory,
            Mode::Plan,
            now,
            &never,
        )
        .await
        {
            Ok(o) => self.d.metrics.record_inventory(&o.snapshot, &o.plan),
            Err(e) => debug!(error = %e, "cannot refresh the image gauges"),
        }
    }

    /// Re-read the policy. Returns true when a new policy took effect.
    fn reload(&mut self) -> bool {
        let source = self.d.source.on_reload();
        if source != self.d.source {
            if let Some(path) = source.path() {
                info!(path = %path.display(), "policy file appeared at the default path; reading it");
            }
            self.d.source = source;
        }
        match self.d.source.load() {
            Ok(new) => {
                let changes = describe_changes(&self.d.policy, &new);
                if changes.is_empty() {
                    info!(policy = %new.source, "policy reloaded; nothing changed");
                } else {
                    info!(policy = %new.source, changes = %changes.join("; "), "policy reloaded; applies from the next pass");
                }
                if new.metrics != self.d.policy.metrics {
                    warn!("[metrics] changed; restart imagegc to apply it");
                }
                if new.state.path != self.d.policy.state.path {
                    self.save_to(&new.state.path);
                }
                self.d.metrics.set_policy(&new);
                self.d.metrics.record_reload(true);
                self.d.policy = new;
                if self.reload_rejected.take().is_some() {
                    self.publish_status(&self.last_status);
                }
                true
            }
            Err(errors) => {
                error!(errors = %errors, "policy reload rejected; the current policy stays in force");
                self.d.metrics.record_reload(false);
                self.reload_rejected = Some(format!(
                    "policy reload rejected: {} in {}; running the previous policy",
                    crate::report::table::count(errors.errors.len(), "error", "errors"),
                    self.d.source.file_name(),
                ));
                self.publish_status(&self.last_status);
                false
            }
        }
    }

    fn save_to(&self, path: &std::path::Path) {
        if let Err(e) = self.memory.state.save(path) {
            warn!(error = %e, "cannot write the state file at its new path");
        }
    }
}

/// Feeds the watchdog every `tick` while `progress` shows an engine call
/// finished within `stall`; returns how long it has been quiet once that is
/// `stall` or more.
async fn keep_alive(
    notifier: &dyn Notifier,
    progress: &Progress,
    tick: Duration,
    stall: Duration,
) -> Duration {
    loop {
        let quiet = progress.quiet_for();
        if quiet >= stall {
            return quiet;
        }
        tokio::time::sleep(tick.min(stall.saturating_sub(quiet))).await;
        if progress.quiet_for() < stall {
            notifier.watchdog();
        }
    }
}

/// When an engine call of the current pass last finished, and when its
/// first removal did.
struct Progress(std::sync::Mutex<Instant>, std::sync::Mutex<Option<Instant>>);

impl Progress {
    fn new() -> Self {
        Self(
            std::sync::Mutex::new(Instant::now()),
            std::sync::Mutex::new(None),
        )
    }

    /// A removal succeeded now; the first one is kept.
    fn removed(&self) {
        self.1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
    }

    fn first_removal(&self) -> Option<Instant> {
        *self
            .1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn touch(&self) {
        // A plain instant: a poisoned lock still holds a good one.
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Instant::now();
    }

    fn quiet_for(&self) -> Duration {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
    }
}

/// The daemon's engine as a pass sees it: every finished call, whatever its
/// result, counts as progress.
struct Watched<'a, E> {
    inner: &'a E,
    progress: &'a Progress,
}

impl<E: Engine> Watched<'_, E> {
    async fn noted<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        let result = call.await;
        self.progress.touch();
        result
    }

    /// [`Self::noted`] for a removal: a success is also the pass's first
    /// removal, if none came before.
    async fn removal<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, crate::engine::EngineError>>,
    ) -> Result<T, crate::engine::EngineError> {
        let result = self.noted(call).await;
        if result.is_ok() {
            self.progress.removed();
        }
        result
    }
}

impl<E: Engine> Engine for Watched<'_, E> {
    async fn info(&self) -> Result<crate::engine::EngineInfo, crate::engine::EngineError> {
        self.noted(self.inner.info()).await
    }
    async fn list_images(
        &self,
    ) -> Result<Vec<crate::engine::ImageSummary>, crate::engine::EngineError> {
        self.noted(self.inner.list_images()).await
    }
    async fn list_containers(
        &self,
    ) -> Result<Vec<crate::engine::Container>, crate::engine::EngineError> {
        self.noted(self.inner.list_containers()).await
    }
    fn capabilities(&self) -> crate::engine::Capabilities {
        self.inner.capabilities()
    }
    async fn image_details(
        &self,
        image_id: &str,
    ) -> Result<crate::engine::ImageFacts, crate::engine::EngineError> {
        self.noted(self.inner.image_details(image_id)).await
    }
    async fn remove_image(
        &self,
        target: &str,
    ) -> Result<Vec<crate::engine::DeleteItem>, crate::engine::EngineError> {
        self.removal(self.inner.remove_image(target)).await
    }
    fn events(&self, since: Option<DateTime<Utc>>) -> crate::engine::EventStream {
        self.inner.events(since)
    }
    async fn container_times(
        &self,
        container_id: &str,
    ) -> Result<crate::engine::ContainerTimes, crate::engine::EngineError> {
        self.noted(self.inner.container_times(container_id)).await
    }
    async fn resolve_image(&self, reference: &str) -> Result<String, crate::engine::EngineError> {
        self.noted(self.inner.resolve_image(reference)).await
    }
    async fn build_cache(
        &self,
    ) -> Result<Vec<crate::engine::CacheRecord>, crate::engine::EngineError> {
        self.noted(self.inner.build_cache()).await
    }
    async fn remove_cache_record(
        &self,
        id: &str,
    ) -> Result<crate::engine::CacheRemoval, crate::engine::EngineError> {
        self.removal(self.inner.remove_cache_record(id)).await
    }
    async fn container_details(
        &self,
        id: &str,
        size: bool,
    ) -> Result<crate::engine::ContainerDetails, crate::engine::EngineError> {
        self.noted(self.inner.container_details(id, size)).await
    }
    async fn remove_container(&self, id: &str) -> Result<(), crate::engine::EngineError> {
        self.removal(self.inner.remove_container(id)).await
    }
}
