//! Retry, limit and the composed stack: the shared contract suite plus their own rules.

use std::sync::Arc;
use std::time::Duration;

use haven_store::{
    suite, wrap, DynBackend, ErrorClass, FileKind, FlakyBackend, LimitBackend, MemoryBackend,
    ReadBackend, RetryBackend, RetryPolicy, StackOptions, WriteBackend,
};

fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(4),
    }
}

#[test]
fn retry_backend_meets_the_contract() {
    suite::run_all(&RetryBackend::new(MemoryBackend::new(), fast(3)));
}

#[test]
fn limit_backend_meets_the_contract() {
    suite::run_all(&LimitBackend::new(MemoryBackend::new(), 2));
}

#[test]
fn composed_stack_meets_the_contract() {
    let raw: DynBackend = Arc::new(MemoryBackend::new());
    let options = StackOptions {
        retry: fast(3),
        connections: 3,
    };
    suite::run_all(&*wrap(raw, &options));
}

#[test]
fn retry_recovers_from_transient_failures() {
    let b = RetryBackend::new(FlakyBackend::new(), fast(5));
    b.create().unwrap();
    b.inner().fail_next(4);
    b.write(FileKind::Pack, "aa", b"data").unwrap();
    assert_eq!(
        b.inner().calls(),
        1 + 5,
        "create, then 4 failures and 1 success"
    );
    b.inner().fail_next(2);
    assert_eq!(b.read(FileKind::Pack, "aa").unwrap(), b"data");
    assert_eq!(b.inner().calls(), 6 + 3);
}

#[test]
fn retry_gives_up_after_max_attempts() {
    let b = RetryBackend::new(FlakyBackend::new(), fast(3));
    b.create().unwrap();
    b.inner().set_down(true);
    let err = b.write(FileKind::Pack, "aa", b"data").unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(
        err.to_string().contains("gave up after 3 attempts"),
        "{err}"
    );
    assert_eq!(b.inner().calls(), 1 + 3);
}

#[test]
fn retry_never_retries_lasting_errors() {
    let b = RetryBackend::new(FlakyBackend::new(), fast(5));
    b.create().unwrap();
    for class in [
        ErrorClass::Permanent,
        ErrorClass::NoSpace,
        ErrorClass::NotFound,
    ] {
        let before = b.inner().calls();
        b.inner().fail_next_with(1, class);
        let err = b.write(FileKind::Index, "bb", b"x").unwrap_err();
        assert_eq!(err.class, class);
        assert_eq!(b.inner().calls(), before + 1, "{class:?} is not retried");
    }
    let before = b.inner().calls();
    assert!(b
        .read(FileKind::Index, "missing")
        .unwrap_err()
        .is_not_found());
    assert_eq!(
        b.inner().calls(),
        before + 1,
        "a missing file is not retried"
    );
}

#[test]
fn retry_does_not_retry_create() {
    let b = RetryBackend::new(FlakyBackend::new(), fast(5));
    b.inner().fail_next(1);
    assert_eq!(b.create().unwrap_err().class, ErrorClass::Transient);
    assert_eq!(b.inner().calls(), 1);
}

#[test]
fn backoff_is_exponential_capped_and_jittered() {
    let p = RetryPolicy {
        max_attempts: 10,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
    };
    for _ in 0..20 {
        let d0 = p.delay(0);
        assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
        let d2 = p.delay(2);
        assert!(d2 >= Duration::from_millis(200) && d2 <= Duration::from_millis(400));
        let d9 = p.delay(40);
        assert!(d9 >= Duration::from_millis(500) && d9 <= Duration::from_secs(1));
    }
}

#[test]
fn limit_never_exceeds_its_bound() {
    let b = LimitBackend::new(FlakyBackend::new(), 3);
    b.create().unwrap();
    b.inner().set_delay(Duration::from_millis(15));
    std::thread::scope(|s| {
        for t in 0..12 {
            let b = &b;
            s.spawn(move || {
                for i in 0..3 {
                    b.write(FileKind::Pack, &format!("{t:02}{i}"), b"x")
                        .unwrap();
                }
            });
        }
    });
    let peak = b.inner().peak_concurrency();
    assert!(peak <= 3, "peak concurrency {peak} exceeds the limit of 3");
    assert!(
        peak >= 2,
        "the limit should still allow parallelism (peak {peak})"
    );
    assert_eq!(b.list(FileKind::Pack).unwrap().len(), 36);
}
