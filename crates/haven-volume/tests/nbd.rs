//! The NBD server driven by real clients: qemu-io and qemu-img (QEMU's NBD client),
//! nbdcopy and nbdinfo (libnbd, Debian `libnbd-bin`), plus Haven's own client for the
//! error paths. Exports are a file-backed device (a raw image in a temp dir) and
//! in-memory ones, served on 127.0.0.1:0.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use haven_volume::nbd::{
    list_exports, proto, BlockDevice, ClientError, ExportMap, IoFailure, MemDevice, NbdClient,
    NbdServer, ServerError, Stopper,
};

const MIB: u64 = 1 << 20;

/// A raw image file as a device: FUA and FLUSH are fdatasync.
struct FileDevice {
    file: File,
    size: u64,
}

impl FileDevice {
    fn create(path: &Path, size: u64) -> FileDevice {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .unwrap();
        file.set_len(size).unwrap();
        FileDevice { file, size }
    }

    fn io(e: std::io::Error) -> IoFailure {
        IoFailure::Io(e.to_string())
    }

    fn sync_if(&self, fua: bool) -> Result<(), IoFailure> {
        if fua {
            self.file.sync_data().map_err(FileDevice::io)?;
        }
        Ok(())
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), IoFailure> {
        self.file.read_exact_at(buf, offset).map_err(FileDevice::io)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), IoFailure> {
        self.file
            .write_all_at(data, offset)
            .map_err(FileDevice::io)?;
        self.sync_if(fua)
    }
    fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        let zeroes = vec![0u8; MIB as usize];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MIB);
            self.file
                .write_all_at(&zeroes[..n as usize], offset + done)
                .map_err(FileDevice::io)?;
            done += n;
        }
        self.sync_if(fua)
    }
    fn trim(&self, offset: u64, len: u64, fua: bool) -> Result<(), IoFailure> {
        self.write_zeroes(offset, len, fua)
    }
    fn flush(&self) -> Result<(), IoFailure> {
        self.file.sync_data().map_err(FileDevice::io)
    }
}

struct Served {
    port: u16,
    stopper: Stopper,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
}

impl Served {
    fn url(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.port)
    }
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stopper.stop();
        if let Some(t) = self.thread.take() {
            let ended = t.join().expect("server thread");
            if !std::thread::panicking() {
                ended.expect("server run");
            }
        }
    }
}

fn serve(exports: ExportMap) -> Served {
    let server = NbdServer::bind("127.0.0.1:0", Arc::new(exports)).unwrap();
    let port = server.local_addr().port();
    let stopper = server.stopper();
    let thread = Some(std::thread::spawn(move || server.run()));
    Served {
        port,
        stopper,
        thread,
    }
}

/// Runs a tool with a deadline (a hung client fails the test instead of hanging it).
fn run(program: &str, args: &[&str]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is needed (scripts/test.sh installs it): {e}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{program} {args:?} did not finish in 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn pattern(len: u64, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u8)
                .wrapping_mul(31)
                .wrapping_add(seed)
                .wrapping_add((i >> 12) as u8)
        })
        .collect()
}

#[test]
fn qemu_io_writes_reads_zeroes_discards_and_flushes() {
    let dev = Arc::new(MemDevice::new(8 * MIB as usize));
    let mut m = ExportMap::new();
    m.insert("vol", dev.clone());
    let s = serve(m);
    let url = s.url("vol");
    let out = run_ok(
        "qemu-io",
        &[
            "-f",
            "raw",
            &url,
            "-c",
            "write -P 0xab 0 1M",
            "-c",
            "read -P 0xab 0 1M",
            "-c",
            "write -f -P 0xcd 1M 64k",
            "-c",
            "write -z 2M 1M",
            "-c",
            "discard 4M 64k",
            "-c",
            "write -P 0x11 7M 1M",
            "-c",
            "flush",
            "-c",
            "read -P 0xcd 1M 64k",
            "-c",
            "read -P 0x11 7M 1M",
        ],
    );
    assert!(!out.contains("failed"), "{out}");
    assert_eq!(
        out.matches("read 1048576/1048576 bytes").count(),
        2,
        "{out}"
    );
    let data = dev.contents();
    assert!(data[..MIB as usize].iter().all(|&b| b == 0xab));
    assert!(data[MIB as usize..(MIB + 65536) as usize]
        .iter()
        .all(|&b| b == 0xcd));
    assert!(data[2 * MIB as usize..3 * MIB as usize]
        .iter()
        .all(|&b| b == 0));
    assert!(data[7 * MIB as usize..].iter().all(|&b| b == 0x11));
    assert!(
        dev.fua_writes() >= 1,
        "qemu-io's write -f must reach the device with FUA"
    );
    assert!(dev.flushes() >= 1);

    // A pattern mismatch is seen by qemu-io: the check above can fail.
    let out = run("qemu-io", &["-f", "raw", &url, "-c", "read -P 0x99 0 4k"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Pattern verification failed"), "{text}");
}

#[test]
fn qemu_img_info_convert_and_compare_against_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let size = 16 * MIB;
    let src = dir.path().join("src.img");
    std::fs::write(&src, pattern(size, 3)).unwrap();
    let dev = Arc::new(FileDevice::create(&dir.path().join("export.img"), size));
    let mut m = ExportMap::new();
    m.insert("disk", dev);
    let s = serve(m);
    let url = s.url("disk");

    let info = run_ok("qemu-img", &["info", "--output=json", "-f", "raw", &url]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["virtual-size"], size, "{info}");

    // The export is zeroed: compare must tell the difference before the copy.
    let before = run(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    assert_eq!(
        before.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&before.stdout)
    );
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-n",
            "-f",
            "raw",
            "-O",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    run_ok(
        "qemu-img",
        &[
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            src.to_str().unwrap(),
            &url,
        ],
    );
    // And back out to a new file, byte for byte.
    let back = dir.path().join("back.img");
    run_ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            &url,
            back.to_str().unwrap(),
        ],
    );
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap());
}

#[test]
fn nbdcopy_and_nbdinfo_list() {
    let dir = tempfile::tempdir().unwrap();
    let size = 8 * MIB;
    let src = dir.path().join("src.img");
    std::fs::write(&src, pattern(size, 9)).unwrap();
    let a = Arc::new(MemDevice::new(size as usize));
    let mut m = ExportMap::new();
    m.insert("a", a.clone())
        .insert("b", Arc::new(MemDevice::new(MIB as usize)));
    let s = serve(m);

    let list = run_ok("nbdinfo", &["--list", "--json", &s.url("")]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let names: Vec<&str> = list["exports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["export-name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"], "{list}");
    let info = run_ok("nbdinfo", &["--json", &s.url("a")]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let export = &info["exports"][0];
    assert_eq!(export["export-size"], size, "{info}");
    assert_eq!(export["block_size_maximum"], 32 * MIB, "{info}");
    assert_eq!(export["can_flush"], true, "{info}");
    assert_eq!(export["can_fua"], true, "{info}");
    assert_eq!(export["can_multi_conn"], true, "{info}");

    // nbdcopy uses several connections and requests in flight at once.
    run_ok("nbdcopy", &[src.to_str().unwrap(), &s.url("a")]);
    assert!(a.contents() == std::fs::read(&src).unwrap());
    let out = dir.path().join("out.img");
    std::fs::write(&out, b"").unwrap();
    run_ok("nbdcopy", &[&s.url("a"), out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == std::fs::read(&src).unwrap());

    // An unknown export: nbdinfo fails and says so.
    let bad = run("nbdinfo", &[&s.url("nope")]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("nope"), "{err}");
}

#[test]
fn error_paths_seen_by_a_client() {
    let dev = Arc::new(MemDevice::new(MIB as usize));
    let mut m = ExportMap::new();
    m.insert("vol", dev.clone())
        .insert("spare", Arc::new(MemDevice::new(512)));
    let s = serve(m);
    assert_eq!(
        list_exports(s.addr(), Duration::from_secs(10)).unwrap(),
        ["spare", "vol"]
    );

    let e = NbdClient::connect(s.addr(), "missing").unwrap_err();
    assert_eq!(e.option_reply(), Some(proto::REP_ERR_UNKNOWN), "{e}");
    // qemu-io too names the problem.
    let q = run(
        "qemu-io",
        &["-f", "raw", &s.url("missing"), "-c", "read 0 512"],
    );
    assert!(!q.status.success());

    let mut c = NbdClient::connect(s.addr(), "vol").unwrap();
    let e = c.read(MIB - 512, 1024).unwrap_err();
    assert_eq!(e.nbd_error(), Some(proto::EINVAL), "{e}");
    c.write(0, b"still here", false).unwrap();
    assert_eq!(c.read(0, 10).unwrap(), b"still here");

    dev.fail_with(IoFailure::Shutdown("lease lost".into()));
    let e = c.write(0, b"x", false).unwrap_err();
    assert_eq!(e.nbd_error(), Some(proto::ESHUTDOWN), "{e}");
    assert!(matches!(c.flush().unwrap_err(), ClientError::Closed));
    // qemu-io sees the failure as an error of its command.
    let q = run(
        "qemu-io",
        &["-f", "raw", &s.url("vol"), "-c", "write 0 512"],
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&q.stdout),
        String::from_utf8_lossy(&q.stderr)
    );
    assert!(text.contains("write failed"), "{text}");
    dev.clear_failure();
    let mut again = NbdClient::connect(s.addr(), "vol").unwrap();
    assert_eq!(again.read(0, 10).unwrap(), b"still here");
    again.disconnect().unwrap();
}
