//! Test support shared by the regression tests of several crates (included by `#[path]`):
//! finding the processes a test started by a marker in their environment, and killing
//! what is left of them when a test fails half-way.

/// Kills what is left of the marked processes when a test fails half-way (so a
/// regression does not leave `sleep 1000`s behind).
pub struct Reap(pub String);

impl Drop for Reap {
    fn drop(&mut self) {
        for pid in processes_marked(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Live (not zombie) processes whose environment holds `marker`.
pub fn processes_marked(marker: &str) -> Vec<u32> {
    let mut found = vec![];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !env.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if state.is_some_and(|s| s != 'Z' && s != 'X') {
            found.push(pid);
        }
    }
    found
}
