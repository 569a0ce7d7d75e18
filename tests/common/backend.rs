//! Storage backends for the delivery tests: a temporary SQLite file, or a fresh PostgreSQL
//! database on the local server (dropped afterwards).
#![allow(dead_code)]

use sqlx::Connection;

pub const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One test's store.
pub struct Store {
    pub url: String,
    pub pg_db: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl Store {
    pub async fn sqlite() -> Store {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/gateway.db", dir.path().display());
        Store {
            url,
            pg_db: None,
            _dir: Some(dir),
        }
    }

    pub async fn postgres() -> Store {
        let name = format!("gw_e2e_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(PG_ADMIN)
            .await
            .expect("PostgreSQL on 127.0.0.1:5432");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create db");
        Store {
            url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
            pg_db: Some(name),
            _dir: None,
        }
    }

    /// The URL with host:port replaced (to route PostgreSQL through a test proxy).
    pub fn url_via(&self, addr: std::net::SocketAddr) -> String {
        self.url.replace("127.0.0.1:5432", &addr.to_string())
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some(name) = self.pg_db.take() {
            super::block_on_detached(async move {
                if let Ok(mut admin) = sqlx::PgConnection::connect(PG_ADMIN).await {
                    let drop_db = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
                    let _ = sqlx::query(&drop_db).execute(&mut admin).await;
                }
            });
        }
    }
}
