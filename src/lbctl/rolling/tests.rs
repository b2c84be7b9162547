use std::cell::RefCell;

use super::*;

#[test]
fn canaries_go_one_at_a_time_then_the_rest_by_concurrency() {
    let wave = |canary, members: &[usize]| Wave {
        canary,
        members: members.to_vec(),
    };
    assert_eq!(
        waves(6, 2, 3),
        vec![
            wave(true, &[0]),
            wave(true, &[1]),
            wave(false, &[2, 3, 4]),
            wave(false, &[5]),
        ]
    );
    assert_eq!(waves(3, 1, 2), vec![wave(true, &[0]), wave(false, &[1, 2])]);
    // No canaries, and a concurrency of 0 taken as 1.
    assert_eq!(waves(2, 0, 0), vec![wave(false, &[0]), wave(false, &[1])]);
    // More canaries than backends: every backend is a canary.
    assert_eq!(waves(2, 5, 2), vec![wave(true, &[0]), wave(true, &[1])]);
    assert_eq!(waves(0, 1, 2), vec![]);
}

fn stats(requests: u64, errors: u64, latency_counts: &[u64]) -> proto::BackendStats {
    proto::BackendStats {
        requests,
        responses_by_class: vec![requests - errors, 0, 0, errors],
        latency_bounds_seconds: crate::stats::BUCKETS.to_vec(),
        latency_counts: latency_counts.to_vec(),
        checks_passed: 0,
        checks_failed: 0,
    }
}

#[test]
fn traffic_is_the_difference_of_two_readings_in_the_verdicts_buckets() {
    // lb's buckets: 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25 ms ...; the last entry is the overflow.
    let mut before = vec![0u64; 17];
    let mut after = vec![0u64; 17];
    before[3] = 10; // 1 ms
    after[3] = 30;
    after[4] = 5; // 2.5 ms: counted in the verdict's 5 ms bucket
    after[7] = 2; // 25 ms: in its 30 ms bucket
    after[16] = 1; // over 10 s
    let summary = traffic(Some(&stats(10, 0, &before)), &stats(38, 3, &after), 5);
    assert_eq!(summary.seconds, 5);
    assert_eq!(summary.requests, 28);
    assert_eq!(summary.errors(), 3);
    let position = |ms: u64| LATENCY_BOUNDS_MS.iter().position(|&b| b == ms).unwrap();
    assert_eq!(summary.latency[position(1)], 20);
    assert_eq!(summary.latency[position(5)], 5);
    assert_eq!(summary.latency[position(30)], 2);
    assert_eq!(summary.latency[LATENCY_BUCKETS - 1], 1);
    assert_eq!(summary.latency.iter().sum::<u64>(), 28);
    // A backend declared afresh (counters back at zero) counts from zero.
    let reset = traffic(Some(&stats(100, 0, &before)), &stats(7, 0, &before), 5);
    assert_eq!(reset.requests, 7);
    assert_eq!(traffic(None, &stats(4, 1, &before), 1).errors(), 1);
}

fn addr(port: u16) -> BackendAddr {
    BackendAddr::new("127.0.0.1".parse().unwrap(), port, "").unwrap()
}

fn entry(port: u16, stats: proto::BackendStats) -> proto::BackendHealth {
    proto::BackendHealth {
        backend: Some(proto::Backend {
            backend: Some(proto::backend::Backend::IpBackend(proto::IpBackend {
                ip: "127.0.0.1".into(),
                port: i32::from(port),
                url_path: String::new(),
            })),
        }),
        status: proto::BackendStatus::BsHealthy as i32,
        admin_state: proto::AdminState::AsEnabled as i32,
        in_flight: 0,
        canary: false,
        stats: Some(stats),
    }
}

const THRESHOLDS: Thresholds = crate::control::DEFAULT_THRESHOLDS;

#[test]
fn a_bake_compares_the_backend_with_the_pool_outside_its_wave() {
    let fast = |n| {
        let mut counts = vec![0; 17];
        counts[3] = n;
        counts
    };
    let pool = |a: (u64, u64), b: (u64, u64), c: (u64, u64)| proto::PoolHealth {
        status: 0,
        backends: vec![
            entry(1, stats(a.0, a.1, &fast(a.0))),
            entry(2, stats(b.0, b.1, &fast(b.0))),
            entry(3, stats(c.0, c.1, &fast(c.0))),
        ],
    };
    let before = pool((0, 0), (1000, 0), (50, 0));
    // 1 answered 200 requests with 30 errors; 2 took 400 clean ones; 3 is in 1's wave.
    let after = pool((200, 30), (1400, 0), (900, 400));
    let bake = judge_bake(
        &addr(1),
        &[addr(1), addr(3)],
        &before,
        &after,
        10,
        &THRESHOLDS,
    );
    assert_eq!(bake.backend.requests, 200);
    assert_eq!(bake.backend.errors, 30);
    assert_eq!(
        bake.rest.requests, 400,
        "3 is in the same wave: not the rest"
    );
    assert!(!bake.passed());
    assert!(
        bake.to_string()
            .starts_with("fail: backend 200 requests, 30 errors (15.00%)"),
        "{bake}"
    );
    // Too little traffic is a pass, said so.
    let quiet = pool((10, 0), (1010, 0), (50, 0));
    let bake = judge_bake(&addr(1), &[addr(1)], &before, &quiet, 10, &THRESHOLDS);
    assert!(bake.passed() && bake.verdict_name() == "not enough data");
    assert!(bake.to_string().contains("counted as a pass"), "{bake}");
}

/// A pool lb would answer for: each reading advances every healthy backend's checks and gives
/// every backend in rotation 100 requests; `failing` ports fail their command.
struct Fake {
    pool: RefCell<Vec<proto::BackendHealth>>,
    failing: Vec<u16>,
    log: RefCell<Vec<String>>,
    /// Cancelled when the command for this port runs (a Ctrl-C during it).
    interrupt_at: Option<(u16, CancellationToken)>,
}

impl Fake {
    fn new(ports: &[u16], failing: &[u16]) -> Fake {
        Fake {
            pool: RefCell::new(
                ports
                    .iter()
                    .map(|&p| entry(p, stats(0, 0, &[0; 17])))
                    .collect(),
            ),
            failing: failing.to_vec(),
            log: RefCell::default(),
            interrupt_at: None,
        }
    }

    fn set(&self, backend: &BackendAddr, state: proto::AdminState) {
        let mut pool = self.pool.borrow_mut();
        let entry = pool
            .iter_mut()
            .find(|e| backend_of(e).as_ref() == Some(backend))
            .unwrap();
        entry.admin_state = state as i32;
    }

    fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }
}

impl Control for Fake {
    async fn pool_health(&self) -> Result<proto::PoolHealth, ControlError> {
        let mut pool = self.pool.borrow_mut();
        for entry in pool.iter_mut() {
            let (serving, healthy) = (in_rotation(entry), is_healthy(entry));
            let stats = entry.stats.as_mut().unwrap();
            if healthy {
                stats.checks_passed += 1;
            }
            if serving {
                stats.requests += 100;
                stats.responses_by_class[0] += 100;
                stats.latency_counts[3] += 100;
            }
        }
        Ok(proto::PoolHealth {
            status: 0,
            backends: pool.clone(),
        })
    }

    async fn drain(&self, backend: &BackendAddr) -> Result<String, ControlError> {
        self.log
            .borrow_mut()
            .push(format!("drain {}", backend.addr.port()));
        self.set(backend, proto::AdminState::AsDrain);
        Ok(String::new())
    }

    async fn enable(&self, backend: &BackendAddr) -> Result<String, ControlError> {
        self.log
            .borrow_mut()
            .push(format!("enable {}", backend.addr.port()));
        self.set(backend, proto::AdminState::AsEnabled);
        Ok(String::new())
    }

    async fn run(
        &self,
        backend: &BackendAddr,
        _timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), CommandError> {
        let port = backend.addr.port();
        self.log.borrow_mut().push(format!("run {port}"));
        if let Some((at, token)) = &self.interrupt_at {
            if *at == port {
                token.cancel();
            }
        }
        if cancel.is_cancelled() {
            return Err(CommandError::Interrupted);
        }
        if self.failing.contains(&port) {
            return Err(CommandError::Failed("exit status 1".into()));
        }
        Ok(())
    }

    fn say(&self, _line: &str) {}
}

fn settings(canaries: usize, concurrency: usize, max_failures: usize) -> Settings {
    Settings {
        pattern: "/".into(),
        command: "true".into(),
        canaries,
        concurrency,
        max_failures,
        bake: Duration::from_secs(1),
        timeout: Duration::from_secs(10),
        thresholds: THRESHOLDS,
    }
}

fn outcomes(report: &Report) -> Vec<&'static str> {
    report.backends.iter().map(|b| b.outcome.name()).collect()
}

#[tokio::test(start_paused = true)]
async fn every_backend_is_drained_upgraded_and_enabled_in_wave_order() {
    let fake = Fake::new(&[1, 2, 3, 4, 5], &[]);
    let report = run(&fake, &settings(1, 2, 0), &CancellationToken::new())
        .await
        .unwrap();
    assert!(report.complete(), "{}", report.render());
    let log = fake.log();
    assert_eq!(&log[..3], ["drain 1", "run 1", "enable 1"]);
    // A wave's drains come first, one each, then its members go on together.
    assert_eq!(&log[3..5], ["drain 2", "drain 3"]);
    let position = |step: &str| log.iter().position(|l| l == step).unwrap();
    assert!(position("enable 2") < position("drain 4"));
    assert!(position("enable 3") < position("drain 4"));
    assert_eq!(log.len(), 15, "{log:?}");
    assert_eq!(report.backends[1].wave, 2);
    assert!(report.backends[0].canary && !report.backends[1].canary);
}

#[tokio::test(start_paused = true)]
async fn a_failed_canary_stops_the_rollout_and_stays_drained() {
    let fake = Fake::new(&[1, 2, 3], &[1]);
    let report = run(&fake, &settings(1, 2, 5), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(fake.log(), ["drain 1", "run 1"]);
    assert_eq!(outcomes(&report), ["failed", "not started", "not started"]);
    assert_eq!(report.stopped.as_deref(), Some("canary 127.0.0.1:1 failed"));
    let Outcome::Failed { step, left, .. } = &report.backends[0].outcome else {
        panic!("{report:?}");
    };
    assert_eq!((*step, *left), (Step::Command, Left::Drained));
    assert!(report
        .render()
        .contains("stopped: canary 127.0.0.1:1 failed"));
    assert_eq!(report.json()["backends"][0]["left"], "drained");
}

#[tokio::test(start_paused = true)]
async fn the_rollout_stops_once_failures_exceed_max_failures() {
    let fake = Fake::new(&[1, 2, 3, 4, 5], &[2, 3]);
    let report = run(&fake, &settings(1, 1, 1), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        ["upgraded", "failed", "failed", "not started", "not started"]
    );
    assert!(report
        .stopped
        .as_deref()
        .unwrap()
        .contains("2 backends failed"));
    assert!(!fake.log().iter().any(|l| l.ends_with(" 4")));
    // One failure within the maximum: the rollout goes on past it.
    let fake = Fake::new(&[1, 2, 3, 4], &[2]);
    let report = run(&fake, &settings(1, 1, 1), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        ["upgraded", "failed", "upgraded", "upgraded"]
    );
    assert_eq!(report.stopped, None);
    assert!(!report.complete());
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_starts_nothing_new_and_changes_nothing() {
    let cancel = CancellationToken::new();
    let mut fake = Fake::new(&[1, 2, 3], &[]);
    fake.interrupt_at = Some((2, cancel.clone()));
    let report = run(&fake, &settings(1, 1, 0), &cancel).await.unwrap();
    assert_eq!(
        outcomes(&report),
        ["upgraded", "interrupted", "not started"]
    );
    assert_eq!(
        fake.log(),
        ["drain 1", "run 1", "enable 1", "drain 2", "run 2"]
    );
    assert_eq!(
        report.backends[1].outcome,
        Outcome::Interrupted {
            step: Step::Command,
            left: Left::Drained
        }
    );
    assert_eq!(report.stopped.as_deref(), Some("interrupted"));
}

#[tokio::test(start_paused = true)]
async fn a_wave_that_would_empty_the_pool_is_not_drained() {
    let fake = Fake::new(&[1, 2, 3], &[]);
    // 3 is sick: draining 1 and 2 together would leave nothing in rotation.
    fake.pool.borrow_mut()[2].status = proto::BackendStatus::BsSick as i32;
    let report = run(&fake, &settings(0, 2, 0), &CancellationToken::new())
        .await
        .unwrap();
    assert!(
        report
            .stopped
            .as_deref()
            .unwrap()
            .contains("no backend in rotation"),
        "{report:?}"
    );
    assert!(fake.log().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_pool_of_one_and_disabled_backends() {
    let fake = Fake::new(&[1], &[]);
    let error = run(&fake, &settings(1, 1, 0), &CancellationToken::new())
        .await
        .unwrap_err();
    assert!(error.to_string().contains("at least two"), "{error}");
    let fake = Fake::new(&[1, 2, 3], &[]);
    fake.set(&addr(2), proto::AdminState::AsDisabled);
    let report = run(&fake, &settings(1, 1, 0), &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(
        outcomes(&report),
        ["upgraded", "upgraded", "skipped (disabled)"]
    );
    assert!(report.complete());
}

#[tokio::test]
async fn the_command_gets_the_backend_in_its_environment_and_a_deadline() {
    let cancel = CancellationToken::new();
    let env = [("LB_BACKEND_PORT", "8080".to_owned())];
    run_command(
        "test \"$LB_BACKEND_PORT\" = 8080",
        &env,
        "",
        true,
        Duration::from_secs(10),
        &cancel,
    )
    .await
    .unwrap();
    assert_eq!(
        run_command("exit 3", &env, "", true, Duration::from_secs(10), &cancel).await,
        Err(CommandError::Failed("exit status 3".into()))
    );
    let started = std::time::Instant::now();
    assert_eq!(
        run_command(
            "sleep 30",
            &env,
            "",
            true,
            Duration::from_millis(200),
            &cancel
        )
        .await,
        Err(CommandError::TimedOut(Duration::from_millis(200)))
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
