//! What persisting dirty-map bits costs a sequential writer (run by hand:
//! `cargo nextest run -p haven-volume --run-ignored only sequential_write_cost`; the
//! numbers are in docs/VOLUMES.md, "Replica protocol").

use std::time::{Duration, Instant};

use haven_volume::replica::{ReplicaClient, ReplicaServer};
use haven_volume::wire::WriteStamp;

#[test]
#[ignore = "a measurement, not a check"]
fn sequential_write_cost() {
    let dir =
        tempfile::tempdir_in(std::env::var("HAVEN_COST_DIR").unwrap_or("/var/tmp".into())).unwrap();
    let mut server = ReplicaServer::new(dir.path(), "a", "n").unwrap();
    server.bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| server.run(&stop).unwrap());
        let mut c = ReplicaClient::connect(addr, Duration::from_secs(30)).unwrap();
        let size: u64 = 1 << 30;
        c.create_volume("v", size).unwrap();
        c.hello("v", 1, 1).unwrap();
        let data = vec![0x5au8; 1 << 20];
        for (i, at) in (0..size).step_by(1 << 20).enumerate() {
            c.write(
                &WriteStamp::new(1, 1, i as u64 + 1, i as u64),
                at,
                &data,
                false,
            )
            .unwrap();
        }
        c.flush(1).unwrap();
        let mut seq = size;
        for (round, bs) in [1u64 << 20, 64 << 10, 4 << 10]
            .repeat(3)
            .into_iter()
            .enumerate()
        {
            let data = vec![0xa5u8; bs as usize];
            // The data is allocated by a first pass. Pass 1, gen g: every write marks new regions (one sync_data of the map per
            // write). Pass 2, same gen: no new region, no map write.
            for (pass, gen) in [
                ("new regions", 10 + round as u64),
                ("marked regions", 10 + round as u64),
            ] {
                let t = Instant::now();
                let mut at = 0;
                while at < size {
                    seq += 1;
                    c.write(&WriteStamp::new(1, gen, seq, seq - 1), at, &data, false)
                        .unwrap();
                    at += bs;
                }
                c.flush(1).unwrap();
                let secs = t.elapsed().as_secs_f64();
                println!(
                    "bs {} KiB, {pass}: {:.0} MiB/s ({secs:.2} s for 1 GiB incl. final flush)",
                    bs >> 10,
                    1024.0 / secs
                );
            }
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
    });
}
