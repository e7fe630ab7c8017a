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
