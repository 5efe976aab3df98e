//! The schema is migrated at connect, a second connect is a no-op, a newer schema is refused
//! with a clear error, and a malformed URL is refused before any connection.

use steadfast_engine::store::Error;
use steadfast_postgres::testing::PgCluster;
use steadfast_postgres::{PgOptions, PgStore, SCHEMA_VERSION};

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(cluster) = PgCluster::shared() else {
        return;
    };
    let url = cluster.create_database("schema");
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("a fresh database is migrated");
    store.close().await;
    let again = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("an up-to-date database connects");
    again.close().await;
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let version: i32 = client
        .query_one("SELECT version FROM steadfast_schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, SCHEMA_VERSION);
    client
        .execute(
            "UPDATE steadfast_schema_version SET version = $1",
            &[&(SCHEMA_VERSION + 1)],
        )
        .await
        .unwrap();
    match PgStore::connect(&url, PgOptions::default()).await {
        Err(Error::Unavailable(m)) => {
            assert!(m.contains("[STF-PG-SCHEMA]") && m.contains("newer"), "{m}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_malformed_url_is_invalid() {
    match PgStore::connect("postgres://host:notaport/db", PgOptions::default()).await {
        Err(Error::Invalid(m)) => assert!(m.contains("not a PostgreSQL URL"), "{m}"),
        other => panic!("expected Invalid, got {other:?}"),
    }
}
