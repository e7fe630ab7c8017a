//! SQL92 filters through the official Python client: a SimpleConsumer with
//! an SQL expression over user properties gets exactly the messages it
//! selects; a malformed expression is refused with ILLEGAL_FILTER_EXPRESSION
//! naming the problem. The node crashes between the sends and the receive.

use crate::json::Access as _;
use crate::python_client::Python;
use crate::script;
use meridian_tests::{Role, TEST_TOPIC, TestCluster};

#[tokio::test(flavor = "multi_thread")]
async fn python_sql92_filter_selects_by_user_properties_and_refuses_bad_expressions()
-> anyhow::Result<()> {
    let interpreter = Python::from_env()?;
    let mut cluster = TestCluster::builder().regions(1).build().await?;
    let python = Python::for_cluster(interpreter, &cluster)?;
    let endpoint = cluster.router_endpoint("a");
    // Four messages; produce.py gives each the property `index` (0..=3).
    let produced = python
        .run(
            "produce.py",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--tag",
                "sql",
                "--property",
                "region=eu",
                "--sizes=10,10,10,10",
            ]),
        )
        .await?;
    produced.succeeded(|_| Ok(()))?;
    // A crash between the sends and the filtered receive loses nothing.
    cluster.kill9("a", Role::Node)?;
    cluster.start("a", Role::Node).await?;

    let consumed = python
        .run(
            "consume.py",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--group",
                "sql-selective",
                "--sql",
                "index >= 2 AND region IN ('eu', 'us') AND TAGS = 'sql'",
                "--expect",
                "2",
                "--then-empty",
            ]),
        )
        .await?;
    consumed.succeeded(|output| {
        let mut indexes: Vec<String> = output
            .field("received")?
            .array()?
            .iter()
            .map(|message| {
                Ok(message
                    .field("properties")?
                    .field("index")?
                    .str()?
                    .to_owned())
            })
            .collect::<anyhow::Result<_>>()?;
        indexes.sort();
        anyhow::ensure!(indexes == ["2", "3"], "received indexes {indexes:?}");
        Ok(())
    })?;

    let refused = python
        .run(
            "consume.py",
            &script::args([
                "--endpoints",
                &endpoint,
                "--topic",
                TEST_TOPIC,
                "--group",
                "sql-bad",
                "--sql",
                "index >",
                "--expect",
                "1",
                "--timeout",
                "10",
            ]),
        )
        .await?;
    let output = refused.json()?;
    anyhow::ensure!(
        !output.field("ok")?.bool()?,
        "a malformed expression was accepted"
    );
    let error = output.field("error")?.str()?;
    anyhow::ensure!(
        error.contains("SQL92 filter expression `index >` is invalid"),
        "the refusal does not name the problem: {error}"
    );
    cluster.finish();
    Ok(())
}
