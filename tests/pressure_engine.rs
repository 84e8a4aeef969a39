//! The disk-pressure trigger against a real engine: a private dockerd 20.10
//! whose data root is a small loop-mounted ext4 filesystem of its own, and
//! `imagegc run` with a `@yearly` schedule and `disk_high` (or, on an ext4
//! made with few inodes, `inodes_high`). Filling the filesystem with a file
//! (or its inodes with empty files) makes the daemon remove lab images
//! within a bounded wait, long before any scheduled pass. What is asserted
//! is that it happens, not how fast (`benches/pressure_reaction.sh`
//! measures that).
//!
//! Needs root (mount) and dockerd; the guard stops dockerd, unmounts and
//! removes everything, also when the test fails.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use common::private_engine::{image_tarball, unix_request};
use common::{free_port, imagegc_command, wait_for, DaemonProcess};

/// A loop-mounted ext4 filesystem with a private dockerd on it.
struct SmallDiskEngine {
    dir: Option<tempfile::TempDir>,
    dockerd: Option<Child>,
}

impl SmallDiskEngine {
    fn start(mib: u64) -> Self {
        Self::start_with(mib, None)
    }

    /// A filesystem of `mib` MiB with `inodes` inodes (`mkfs.ext4 -N`;
    /// the ext4 default when `None`).
    fn start_with(mib: u64, inodes: Option<u32>) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("imagegc-pressure-")
            .tempdir_in("/tmp")
            .expect("temporary directory");
        let mut engine = Self {
            dir: Some(dir),
            dockerd: None,
        };
        let base = engine.base();
        let image = base.join("fs.img");
        let file = std::fs::File::create(&image).expect("create the filesystem image");
        file.set_len(mib << 20).expect("size the filesystem image");
        let mut mkfs = Command::new("mkfs.ext4");
        mkfs.args(["-q", "-F"]);
        if let Some(n) = inodes {
            mkfs.arg("-N").arg(n.to_string());
        }
        run(mkfs.arg(&image));
        std::fs::create_dir(engine.mount()).expect("mount point");
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(engine.mount()));
        std::fs::write(base.join("daemon.json"), "{}\n").expect("daemon.json");
        let log = std::fs::File::create(base.join("dockerd.log")).expect("dockerd log");
        let child = Command::new("dockerd")
            .arg("--config-file")
            .arg(base.join("daemon.json"))
            .arg("--data-root")
            .arg(engine.mount().join("docker"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--host")
            .arg(format!("unix://{}", engine.socket().display()))
            .arg("--pidfile")
            .arg(base.join("docker.pid"))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip-masq=false",
                "--storage-driver=overlay2",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        engine.dockerd = Some(child);
        let socket = engine.socket();
        wait_for(
            "the private dockerd to answer",
            Duration::from_secs(60),
            || {
                matches!(
                    unix_request(&socket, "GET", "/_ping", None, &[]),
                    Ok((200, _))
                )
                .then_some(())
            },
        );
        engine
    }

    fn base(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("dir until drop")
            .path()
            .to_path_buf()
    }

    fn mount(&self) -> PathBuf {
        self.base().join("mnt")
    }

    fn socket(&self) -> PathBuf {
        self.base().join("docker.sock")
    }

    fn load(&self, tag: &str, bytes: usize) {
        let layer: Vec<u8> = (0..bytes).map(|i| (i * 7919 % 251) as u8).collect();
        let created = Utc::now() - TimeDelta::days(30);
        let (tarball, _) = image_tarball(tag, created, &[layer]);
        let (status, body) = unix_request(
            &self.socket(),
            "POST",
            "/images/load?quiet=1",
            Some("application/x-tar"),
            &tarball,
        )
        .expect("load");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }

    fn lab_images(&self) -> usize {
        let (status, body) =
            unix_request(&self.socket(), "GET", "/images/json", None, &[]).expect("list");
        assert_eq!(status, 200);
        let images: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        images
            .as_array()
            .expect("a list")
            .iter()
            .filter(|i| {
                i["RepoTags"].as_array().is_some_and(|tags| {
                    tags.iter()
                        .any(|t| t.as_str().is_some_and(|t| t.starts_with("lab/")))
                })
            })
            .count()
    }

    /// `df`'s Use% of the filesystem, as a share.
    fn used_ratio(&self) -> f64 {
        let s = nix::sys::statvfs::statvfs(&self.mount()).expect("statvfs");
        let frag = s.fragment_size() as f64;
        let used = (s.blocks() - s.blocks_free()) as f64 * frag;
        let avail = s.blocks_available() as f64 * frag;
        used / (used + avail)
    }

    /// `df -i`'s `IUse%` of the filesystem, as a share.
    fn inodes_used_ratio(&self) -> f64 {
        let s = nix::sys::statvfs::statvfs(&self.mount()).expect("statvfs");
        (s.files() - s.files_free()) as f64 / s.files() as f64
    }
}

impl Drop for SmallDiskEngine {
    fn drop(&mut self) {
        if let Some(mut child) = self.dockerd.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            for _ in 0..300 {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let mount = self.mount();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let mut below: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(&mount) && Path::new(m) != mount)
            .collect();
        below.sort_unstable_by(|a, b| b.cmp(a));
        for m in below {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = Command::new("umount").arg(&mount).status();
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

fn run(command: &mut Command) {
    let out = command.output().expect("run a setup command");
    assert!(
        out.status.success(),
        "{command:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn can_run() -> Option<&'static str> {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid());
    if !matches!(uid, Ok(0)) {
        return Some("not root: cannot loop-mount a filesystem");
    }
    if Command::new("dockerd").arg("--version").output().is_err() {
        return Some("dockerd is not installed");
    }
    None
}

#[test]
fn a_daemon_on_a_yearly_schedule_removes_lab_images_soon_after_a_file_fills_the_disk_past_disk_high(
) {
    if let Some(why) = can_run() {
        eprintln!("skipped: {why}");
        return;
    }
    let engine = SmallDiskEngine::start(512);
    for i in 0..6 {
        engine.load(&format!("lab/pressure:{i}"), 30 << 20);
    }
    let before = engine.lab_images();
    assert_eq!(before, 6);
    let port = free_port();
    let base = engine.base();
    let policy = base.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
schedule = "@yearly"
run_on_start = false
engine = "unix://{socket}"
[metrics]
listen = "127.0.0.1:{port}"
[state]
path = "{state}"
[pressure]
interval = "1s"
[safety]
min_age = "0s"
[[policy]]
name = "lab-pressure"
repositories = ["lab/*"]
disk_high = "80%"
disk_low = "60%"
"#,
            socket = engine.socket().display(),
            state = base.join("state.json").display(),
        ),
    )
    .expect("write the policy");
    let log = std::fs::File::create(base.join("imagegc.log")).expect("imagegc log");
    let _daemon = DaemonProcess(
        imagegc_command()
            .arg("--config")
            .arg(&policy)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .expect("start imagegc run"),
    );
    wait_for("the metrics endpoint", Duration::from_secs(30), || {
        common::http_get(port, "/metrics").map(|_| ())
    });
    // A few samples below disk_high: nothing is removed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(engine.used_ratio() < 0.8, "the lab starts below disk_high");
    assert_eq!(
        engine.lab_images(),
        before,
        "nothing removed below disk_high"
    );

    // Fill to 85%: one file no policy can remove.
    let s = nix::sys::statvfs::statvfs(&engine.mount()).expect("statvfs");
    let frag = s.fragment_size();
    let used = (s.blocks() - s.blocks_free()) * frag;
    let total = used + s.blocks_available() * frag;
    let fill = total * 85 / 100 - used;
    let filler = std::fs::File::create(engine.mount().join("fill")).expect("fill file");
    nix::fcntl::fallocate(
        &filler,
        nix::fcntl::FallocateFlags::empty(),
        0,
        i64::try_from(fill).expect("fits"),
    )
    .expect("fallocate the fill");
    drop(filler);
    assert!(engine.used_ratio() >= 0.8, "the fill crossed disk_high");

    wait_for(
        "the daemon to remove lab images after the disk crossed disk_high",
        Duration::from_secs(60),
        || (engine.lab_images() < before).then_some(()),
    );
    let text = wait_for("a pass finished line", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(base.join("imagegc.log")).ok()?;
        text.contains("pass finished").then_some(text)
    });
    assert!(
        text.contains("trigger=\"pressure\"") || text.contains("trigger=pressure"),
        "the pass was started by the disk sampler:\n{text}"
    );
    let metrics = common::http_get(port, "/metrics").expect("scrape").1;
    assert!(
        metrics.contains(r#"imagegc_passes_total{outcome="success",trigger="pressure"} 1"#),
        "{metrics}"
    );
}

#[test]
fn a_daemon_removes_lab_images_soon_after_empty_files_fill_the_inodes_past_inodes_high() {
    if let Some(why) = can_run() {
        eprintln!("skipped: {why}");
        return;
    }
    // Few inodes, plenty of bytes: only the inodes can run out.
    let engine = SmallDiskEngine::start_with(256, Some(4096));
    for i in 0..6 {
        engine.load(&format!("lab/inodes:{i}"), 10 << 20);
    }
    let before = engine.lab_images();
    assert_eq!(before, 6);
    let port = free_port();
    let base = engine.base();
    let policy = base.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
schedule = "@yearly"
run_on_start = false
engine = "unix://{socket}"
[metrics]
listen = "127.0.0.1:{port}"
[state]
path = "{state}"
[pressure]
interval = "1s"
[safety]
min_age = "0s"
[[policy]]
name = "lab-inodes"
repositories = ["lab/*"]
inodes_high = "80%"
inodes_low = "50%"
"#,
            socket = engine.socket().display(),
            state = base.join("state.json").display(),
        ),
    )
    .expect("write the policy");
    let log = std::fs::File::create(base.join("imagegc.log")).expect("imagegc log");
    let _daemon = DaemonProcess(
        imagegc_command()
            .arg("--config")
            .arg(&policy)
            .arg("run")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log"))
            .stderr(log)
            .spawn()
            .expect("start imagegc run"),
    );
    wait_for("the metrics endpoint", Duration::from_secs(30), || {
        common::http_get(port, "/metrics").map(|_| ())
    });
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        engine.inodes_used_ratio() < 0.8,
        "the lab starts below inodes_high"
    );
    assert!(engine.used_ratio() < 0.5, "and far below any disk mark");
    assert_eq!(
        engine.lab_images(),
        before,
        "nothing removed below inodes_high"
    );

    // Fill the inodes to 85% with empty files: no bytes to speak of, and
    // nothing a policy can remove.
    let s = nix::sys::statvfs::statvfs(&engine.mount()).expect("statvfs");
    let (files, used) = (s.files(), s.files() - s.files_free());
    let fill = engine.mount().join("fill");
    std::fs::create_dir(&fill).expect("fill directory");
    for i in 0..(files * 85 / 100).saturating_sub(used + 1) {
        std::fs::File::create(fill.join(i.to_string())).expect("an empty file");
    }
    assert!(
        engine.inodes_used_ratio() >= 0.8,
        "the empty files crossed inodes_high"
    );
    assert!(engine.used_ratio() < 0.5, "the bytes did not move");

    wait_for(
        "the daemon to remove lab images after the inodes crossed inodes_high",
        Duration::from_secs(60),
        || (engine.lab_images() < before).then_some(()),
    );
    let text = wait_for("a pass finished line", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(base.join("imagegc.log")).ok()?;
        text.contains("pass finished").then_some(text)
    });
    assert!(
        text.contains("trigger=\"pressure\"") || text.contains("trigger=pressure"),
        "the pass was started by the disk sampler:\n{text}"
    );
    let metrics = common::http_get(port, "/metrics").expect("scrape").1;
    assert!(
        metrics.contains(r#"imagegc_passes_total{outcome="success",trigger="pressure"} 1"#),
        "{metrics}"
    );
}
