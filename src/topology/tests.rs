use super::*;

fn backend(port: u16, healthy: bool) -> Arc<Backend> {
    let addr: BackendAddr = format!("127.0.0.1:{port}").parse().unwrap();
    Arc::new(Backend::new(addr, healthy))
}

fn pool(backends: &[Arc<Backend>]) -> Pool {
    Pool {
        pattern: Arc::from("/"),
        pool_type: PoolType::P2c,
        connect_timeout: Duration::from_secs(1),
        backend_tls: None,
        request_timeout: Duration::from_secs(1),
        retries: 1,
        backends: backends.to_vec().into_boxed_slice(),
        n_stable: backends.len(),
        canary: None,
        rate_limit: None,
    }
}

// === rise and fall ===

#[test]
fn the_first_check_of_a_new_backend_decides_at_once() {
    let new = backend(1, false);
    assert_eq!(new.record_check(true, 5, 5), (false, true));
    let new = backend(2, false);
    assert_eq!(new.record_check(false, 5, 5), (false, false));
    // The next result is judged by rise and fall.
    assert_eq!(new.record_check(true, 5, 5), (false, false));
}

#[test]
fn rise_passes_in_a_row_bring_a_sick_backend_back() {
    let b = backend(1, false);
    b.record_check(false, 3, 1);
    assert_eq!(b.record_check(true, 3, 1), (false, false));
    assert_eq!(b.record_check(true, 3, 1), (false, false));
    // A failure starts the count again.
    assert_eq!(b.record_check(false, 3, 1), (false, false));
    assert_eq!(b.record_check(true, 3, 1), (false, false));
    assert_eq!(b.record_check(true, 3, 1), (false, false));
    assert_eq!(b.record_check(true, 3, 1), (false, true));
    assert_eq!(b.record_check(true, 3, 1), (true, true));
}

#[test]
fn fall_failures_in_a_row_take_a_healthy_backend_out() {
    let b = backend(1, true);
    assert_eq!(b.record_check(false, 1, 2), (true, true));
    // A pass starts the count again.
    assert_eq!(b.record_check(true, 1, 2), (true, true));
    assert_eq!(b.record_check(false, 1, 2), (true, true));
    assert_eq!(b.record_check(false, 1, 2), (true, false));
    assert_eq!(b.record_check(false, 1, 2), (false, false));
    // rise = 1, fall = 1 is the original behaviour: every check decides.
    assert_eq!(b.record_check(true, 1, 1), (false, true));
    assert_eq!(b.record_check(false, 1, 1), (true, false));
}

// === passive ejection ===

#[test]
fn ejection_takes_a_backend_out_while_another_is_in_rotation() {
    let backends = [backend(1, true), backend(2, true)];
    let pool = pool(&backends);
    assert!(pool.eject(&backends[0]));
    assert!(!backends[0].in_rotation() && !backends[0].is_healthy());
    // Already out: nothing to do, nothing to count.
    assert!(!pool.eject(&backends[0]));
    assert_eq!(pool.n_healthy(), 1);
}

#[test]
fn ejection_never_takes_the_last_backend_in_rotation_out() {
    let backends = [backend(1, true), backend(2, true), backend(3, false)];
    let pool = pool(&backends);
    assert!(pool.eject(&backends[0]));
    assert!(!pool.eject(&backends[1]));
    assert!(backends[1].in_rotation());
    // A drained backend is not in rotation either, so it does not count as another.
    let drained = [backend(4, true), backend(5, true)];
    drained[0].set_admin(AdminState::Drain);
    let pool = self::pool(&drained);
    assert!(!pool.eject(&drained[1]));
    assert!(drained[1].in_rotation());
}

#[test]
fn rise_passing_checks_after_an_ejection_bring_the_backend_back() {
    let backends = [backend(1, true), backend(2, true)];
    let pool = pool(&backends);
    backends[0].record_check(true, 2, 1);
    backends[0].record_check(true, 2, 1);
    assert!(pool.eject(&backends[0]));
    // The passes before the ejection do not count.
    assert_eq!(backends[0].record_check(true, 2, 1), (false, false));
    assert_eq!(backends[0].record_check(true, 2, 1), (false, true));
}

#[test]
fn an_ejection_does_not_change_the_checks_verdict() {
    let backends = [backend(1, true), backend(2, true)];
    let pool = pool(&backends);
    assert!(pool.eject(&backends[0]));
    // fall = 2: one failure after the ejection leaves the verdict healthy (but ejected) ...
    assert_eq!(backends[0].record_check(false, 1, 2), (false, false));
    // ... and the next pass (rise = 1) ends the ejection.
    assert_eq!(backends[0].record_check(true, 1, 2), (false, true));
}

/// Two requests failing at the same moment on the last two backends in rotation: at most one
/// of the backends leaves, whatever the interleaving.
#[test]
fn concurrent_ejections_never_empty_a_pool() {
    for _ in 0..2_000 {
        let backends = [backend(1, true), backend(2, true)];
        let pool = Arc::new(pool(&backends));
        let start = Arc::new(std::sync::Barrier::new(2));
        let ejectors: Vec<_> = (0..2)
            .map(|i| {
                let (pool, start) = (Arc::clone(&pool), Arc::clone(&start));
                std::thread::spawn(move || {
                    start.wait();
                    pool.eject(&pool.backends[i])
                })
            })
            .collect();
        let ejected: Vec<bool> = ejectors.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(pool.n_healthy() >= 1, "ejected {ejected:?}");
        assert_eq!(pool.n_healthy(), 2 - ejected.iter().filter(|e| **e).count());
    }
}
