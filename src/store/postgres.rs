//! The PostgreSQL backend (`store = "postgres://…"`): each tree of the
//! store is a table `petrel_<tree> (key bytea PRIMARY KEY, value bytea)`,
//! so a prefix or a key range is an index range scan in sled's order
//! (bytea compares byte by byte).
//!
//! One connection writes, owned by the store thread (which serializes
//! the writes); up to `store_readers` more read beside it (`PgReaders`, a
//! pool on the store thread's runtime), each read started once the writes
//! requested before it are committed, so it sees them. Each batch of
//! writes the store thread applies is one
//! transaction, its statements pipelined, committed before the batch
//! returns: a store barrier (which follows the batches before it) then has
//! nothing left to do, and what the server acknowledges after it is
//! committed (with PostgreSQL's default `synchronous_commit = on`, on
//! disk). No transaction stays open between batches, so nodes sharing the
//! database never wait on each other's row locks for long. The schema is
//! created and migrated at connect by the versioned files in
//! `migrations/postgres/`, in one transaction under an advisory lock, so
//! that nodes starting together migrate once.
//!
//! A failed batch is rolled back whole and its error returned, which the
//! store thread keeps (no later barrier succeeds: nothing written after a
//! lost write may be acknowledged as durable); the connection is dropped
//! and the next request connects again.

use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use super::backend::{Backend, BackendFuture, Reader, Write};
use super::{KeyRange, KeyValue, StoreError, Tree};

/// The schema's versions, in order: (version, SQL).
const MIGRATIONS: &[(i32, &str)] = &[(1, include_str!("../../migrations/postgres/0001_trees.sql"))];

/// An arbitrary number of our own: the advisory lock migrations hold.
const MIGRATION_LOCK: i64 = 0x7065_7472_656c; // "petrel"

struct Prepared {
    put: Statement,
    delete: Statement,
    delete_from: Statement,
    delete_range: Statement,
    get: Statement,
    from: Statement,
    range: Statement,
    range_rev: Statement,
    below: Statement,
    count_from: Statement,
    count_range: Statement,
    len: Statement,
}

struct Conn {
    client: Client,
    /// Per tree, prepared on first use.
    st: [Option<Box<Prepared>>; Tree::ALL.len()],
}

impl Conn {
    async fn st(&mut self, t: Tree) -> Result<&Prepared, StoreError> {
        let slot = &mut self.st[t.index()];
        if slot.is_none() {
            *slot = Some(Box::new(prepare(&self.client, t).await.map_err(err)?));
        }
        Ok(self.st[t.index()].as_deref().expect("prepared above"))
    }
}

pub struct PgBackend {
    url: String,
    conn: Option<Conn>,
    /// Connections that may read beside this one.
    readers: usize,
}

fn err(e: tokio_postgres::Error) -> StoreError {
    // The server's message, never the connection string.
    StoreError::Backend(format!("postgres: {e}"))
}

/// The least key greater than every key starting with `prefix`, if any.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut p = prefix.to_vec();
    while let Some(last) = p.pop() {
        if last < 0xFF {
            p.push(last + 1);
            return Some(p);
        }
    }
    None
}

async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(err)?;
    // The lock first: two nodes creating the bookkeeping table at once
    // would otherwise collide in the catalog.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS petrel_migrations (
             version integer PRIMARY KEY,
             applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await
    .map_err(err)?;
    let done: Vec<i32> = tx
        .query("SELECT version FROM petrel_migrations", &[])
        .await
        .map_err(err)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(newer) = done
        .iter()
        .find(|v| !MIGRATIONS.iter().any(|(m, _)| m == *v))
    {
        return Err(StoreError::Unsupported(format!(
            "the PostgreSQL schema is at version {newer}, newer than this Petrel knows"
        )));
    }
    for (v, sql) in MIGRATIONS {
        if done.contains(v) {
            continue;
        }
        tx.batch_execute(sql).await.map_err(err)?;
        tx.execute("INSERT INTO petrel_migrations (version) VALUES ($1)", &[v])
            .await
            .map_err(err)?;
        tracing::info!(version = v, "PostgreSQL schema migrated");
    }
    tx.commit().await.map_err(err)
}

async fn prepare(c: &Client, t: Tree) -> Result<Prepared, tokio_postgres::Error> {
    let table = format!("petrel_{}", t.name());
    let kv = format!("SELECT key, value FROM {table} WHERE");
    let p = |sql: String| async move { c.prepare(&sql).await };
    Ok(Prepared {
        put: p(format!(
            "INSERT INTO {table} (key, value) VALUES ($1, $2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ))
        .await?,
        delete: p(format!("DELETE FROM {table} WHERE key = $1")).await?,
        delete_from: p(format!("DELETE FROM {table} WHERE key >= $1")).await?,
        delete_range: p(format!("DELETE FROM {table} WHERE key >= $1 AND key < $2")).await?,
        get: p(format!("SELECT value FROM {table} WHERE key = $1")).await?,
        from: p(format!("{kv} key >= $1 ORDER BY key")).await?,
        range: p(format!("{kv} key >= $1 AND key < $2 ORDER BY key LIMIT $3")).await?,
        range_rev: p(format!(
            "{kv} key >= $1 AND key < $2 ORDER BY key DESC LIMIT $3"
        ))
        .await?,
        below: p(format!("{kv} key < $1 ORDER BY key LIMIT $2")).await?,
        count_from: p(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE key >= $1 LIMIT $2) s"
        ))
        .await?,
        count_range: p(format!(
            "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE key >= $1 AND key < $2 LIMIT $3) s"
        ))
        .await?,
        len: p(format!("SELECT count(*) FROM {table}")).await?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn pairs(rows: Vec<tokio_postgres::Row>) -> Vec<KeyValue> {
    rows.into_iter().map(|r| (r.get(0), r.get(1))).collect()
}

impl PgBackend {
    /// A backend for `url` (a `postgres://` URL or libpq key=value
    /// string); it connects on its first request, on the store thread.
    pub fn new(url: &str) -> PgBackend {
        PgBackend::with_readers(url, 0)
    }

    /// With up to `readers` more connections for reads (0: every read on
    /// the one connection, in turn with the writes).
    pub fn with_readers(url: &str, readers: usize) -> PgBackend {
        PgBackend {
            url: url.to_string(),
            conn: None,
            readers,
        }
    }

    async fn conn(&mut self) -> Result<&mut Conn, StoreError> {
        if self.conn.is_none() {
            let (mut client, connection) = tokio_postgres::connect(&self.url, NoTls)
                .await
                .map_err(err)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "PostgreSQL connection lost");
                }
            });
            migrate(&mut client).await?;
            self.conn = Some(Conn {
                client,
                st: Default::default(),
            });
        }
        Ok(self.conn.as_mut().expect("connected above"))
    }

    /// The connection and the tree's statements.
    async fn ready(&mut self, t: Tree) -> Result<(&Client, &Prepared), StoreError> {
        let c = self.conn().await?;
        c.st(t).await?;
        let c = &*c;
        Ok((&c.client, c.st[t.index()].as_deref().expect("prepared")))
    }

    /// A failure drops the connection (and with it an open transaction).
    fn check<T>(&mut self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn write_batch(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        let r = self.write_in_tx(batch).await;
        if r.is_err() {
            self.conn = None;
        }
        r
    }

    async fn write_in_tx(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let c = self.conn().await?;
        for w in batch {
            let t = match w {
                Write::Put(t, ..) | Write::Delete(t, _) | Write::DeletePrefix(t, _) => *t,
            };
            c.st(t).await?;
        }
        let c = &*c;
        // The ends of deleted prefixes first, then one pipelined statement
        // per write, in order.
        let ends: Vec<Option<Vec<u8>>> = batch
            .iter()
            .map(|w| match w {
                Write::DeletePrefix(_, p) => successor(p),
                _ => None,
            })
            .collect();
        let futures = batch.iter().zip(&ends).map(|(w, end)| {
            let st = |t: &Tree| c.st[t.index()].as_deref().expect("prepared above");
            let (stmt, args): (&Statement, Vec<&(dyn ToSql + Sync)>) = match (w, end) {
                (Write::Put(t, k, v), _) => (&st(t).put, vec![k, v]),
                (Write::Delete(t, k), _) => (&st(t).delete, vec![k]),
                (Write::DeletePrefix(t, p), None) => (&st(t).delete_from, vec![p]),
                (Write::DeletePrefix(t, p), Some(e)) => (&st(t).delete_range, vec![p, e]),
            };
            async move { c.client.execute(stmt, &args).await }
        });
        // BEGIN, the statements and COMMIT go out together; a failure
        // anywhere rolls the whole batch back.
        let begin = c.client.batch_execute("BEGIN");
        let (began, done) =
            futures_util::future::join(begin, futures_util::future::try_join_all(futures)).await;
        if let Err(e) = began.and(done.map(|_| ())) {
            let _ = c.client.batch_execute("ROLLBACK").await;
            return Err(err(e));
        }
        c.client.batch_execute("COMMIT").await.map_err(err)
    }
}

/// The reads, on whichever connection runs them.
mod q {
    use super::*;

    pub async fn get(c: &Client, st: &Prepared, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let row = c.query_opt(&st.get, &[&key]).await.map_err(err)?;
        Ok(row.map(|r| r.get(0)))
    }

    pub async fn scan_prefix(
        c: &Client,
        st: &Prepared,
        prefix: &[u8],
    ) -> Result<Vec<KeyValue>, StoreError> {
        let rows = match successor(prefix) {
            Some(end) => c.query(&st.range, &[&prefix, &end, &i64::MAX]).await,
            None => c.query(&st.from, &[&prefix]).await,
        }
        .map_err(err)?;
        Ok(pairs(rows))
    }

    pub async fn scan_below(
        c: &Client,
        st: &Prepared,
        end: &[u8],
        n: usize,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let rows = c.query(&st.below, &[&end, &limit(n)]).await.map_err(err)?;
        Ok(pairs(rows))
    }

    pub async fn scan_range(
        c: &Client,
        st: &Prepared,
        r: &KeyRange,
    ) -> Result<Vec<KeyValue>, StoreError> {
        let stmt = if r.reverse { &st.range_rev } else { &st.range };
        let rows = c
            .query(stmt, &[&r.from, &r.to, &limit(r.limit)])
            .await
            .map_err(err)?;
        Ok(pairs(rows))
    }

    pub async fn count_prefix(
        c: &Client,
        st: &Prepared,
        prefix: &[u8],
        n: usize,
    ) -> Result<usize, StoreError> {
        let row = match successor(prefix) {
            Some(end) => {
                c.query_one(&st.count_range, &[&prefix, &end, &limit(n)])
                    .await
            }
            None => c.query_one(&st.count_from, &[&prefix, &limit(n)]).await,
        }
        .map_err(err)?;
        Ok(row.get::<_, i64>(0) as usize)
    }
}

/// Runs `f` on the backend's connection with the tree's statements; a
/// failure drops the connection.
macro_rules! on_main {
    ($self:ident, $tree:expr, |$c:ident, $st:ident| $body:expr) => {
        Box::pin(async move {
            let r = async {
                let ($c, $st) = $self.ready($tree).await?;
                $body.await
            }
            .await;
            $self.check(r)
        })
    };
}

impl Backend for PgBackend {
    fn write<'a>(&'a mut self, batch: &'a [Write]) -> BackendFuture<'a, ()> {
        Box::pin(self.write_batch(batch))
    }

    fn commit(&mut self) -> BackendFuture<'_, ()> {
        // Every batch was committed as it was written.
        Box::pin(std::future::ready(Ok(())))
    }

    fn get<'a>(&'a mut self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        on_main!(self, tree, |c, st| q::get(c, st, key))
    }

    fn scan_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        on_main!(self, tree, |c, st| q::scan_prefix(c, st, prefix))
    }

    fn scan_below<'a>(
        &'a mut self,
        tree: Tree,
        end: &'a [u8],
        n: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        on_main!(self, tree, |c, st| q::scan_below(c, st, end, n))
    }

    fn scan_range<'a>(
        &'a mut self,
        tree: Tree,
        r: &'a KeyRange,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        on_main!(self, tree, |c, st| q::scan_range(c, st, r))
    }

    fn count_prefix<'a>(
        &'a mut self,
        tree: Tree,
        prefix: &'a [u8],
        n: usize,
    ) -> BackendFuture<'a, usize> {
        on_main!(self, tree, |c, st| q::count_prefix(c, st, prefix, n))
    }

    fn len(&mut self, tree: Tree) -> BackendFuture<'_, usize> {
        Box::pin(async move {
            let r = async {
                let (c, st) = self.ready(tree).await?;
                let row = c.query_one(&st.len, &[]).await.map_err(err)?;
                Ok(row.get::<_, i64>(0) as usize)
            }
            .await;
            self.check(r)
        })
    }

    fn reader(&mut self) -> Option<Rc<dyn Reader>> {
        // Not before this connection created and migrated the schema.
        (self.readers > 0 && self.conn.is_some()).then(|| {
            Rc::new(PgReaders {
                url: self.url.clone(),
                max: self.readers,
                idle: RefCell::new(Vec::new()),
                open: Cell::new(0),
                freed: tokio::sync::Notify::new(),
            }) as Rc<dyn Reader>
        })
    }
}

/// Connections that read beside the one that writes (`store_readers` of
/// them at most, opened on demand, kept while the store lives). The schema
/// is the writer's business: a reader connects after it migrated (the
/// store thread's first request is the writer's).
struct PgReaders {
    url: String,
    max: usize,
    idle: RefCell<Vec<Conn>>,
    open: Cell<usize>,
    freed: tokio::sync::Notify,
}

impl PgReaders {
    /// An idle connection, a new one while fewer than `max` are open, or
    /// the next one given back.
    async fn take(&self) -> Result<Conn, StoreError> {
        loop {
            if let Some(c) = self.idle.borrow_mut().pop() {
                return Ok(c);
            }
            if self.open.get() < self.max {
                self.open.set(self.open.get() + 1);
                match tokio_postgres::connect(&self.url, NoTls).await {
                    Ok((client, connection)) => {
                        tokio::task::spawn_local(async move {
                            if let Err(e) = connection.await {
                                tracing::warn!(error = %e, "PostgreSQL reader connection lost");
                            }
                        });
                        return Ok(Conn {
                            client,
                            st: Default::default(),
                        });
                    }
                    Err(e) => {
                        self.open.set(self.open.get() - 1);
                        self.freed.notify_one();
                        return Err(err(e));
                    }
                }
            }
            self.freed.notified().await;
        }
    }

    /// Gives a connection back (`None`: it failed and is dropped).
    fn give(&self, c: Option<Conn>) {
        match c {
            Some(c) => self.idle.borrow_mut().push(c),
            None => self.open.set(self.open.get() - 1),
        }
        self.freed.notify_one();
    }
}

/// Runs `body` on a reader connection with the tree's statements; a
/// connection that failed is dropped, not given back.
macro_rules! on_reader {
    ($self:ident, $tree:expr, |$c:ident, $st:ident| $body:expr) => {
        Box::pin(async move {
            let mut conn = $self.take().await?;
            let r = match conn.st($tree).await.map(|_| ()) {
                Ok(()) => {
                    let $c = &conn.client;
                    let $st = conn.st[$tree.index()].as_deref().expect("prepared");
                    $body.await
                }
                Err(e) => Err(e),
            };
            $self.give(r.is_ok().then_some(conn));
            r
        })
    };
}

impl Reader for PgReaders {
    fn get<'a>(&'a self, tree: Tree, key: &'a [u8]) -> BackendFuture<'a, Option<Vec<u8>>> {
        on_reader!(self, tree, |c, st| q::get(c, st, key))
    }

    fn scan_prefix<'a>(&'a self, tree: Tree, prefix: &'a [u8]) -> BackendFuture<'a, Vec<KeyValue>> {
        on_reader!(self, tree, |c, st| q::scan_prefix(c, st, prefix))
    }

    fn scan_below<'a>(
        &'a self,
        tree: Tree,
        end: &'a [u8],
        n: usize,
    ) -> BackendFuture<'a, Vec<KeyValue>> {
        on_reader!(self, tree, |c, st| q::scan_below(c, st, end, n))
    }

    fn scan_range<'a>(&'a self, tree: Tree, r: &'a KeyRange) -> BackendFuture<'a, Vec<KeyValue>> {
        on_reader!(self, tree, |c, st| q::scan_range(c, st, r))
    }

    fn count_prefix<'a>(
        &'a self,
        tree: Tree,
        prefix: &'a [u8],
        n: usize,
    ) -> BackendFuture<'a, usize> {
        on_reader!(self, tree, |c, st| q::count_prefix(c, st, prefix, n))
    }
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successor_is_the_least_key_past_a_prefix() {
        assert_eq!(successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
        assert_eq!(successor(b""), None);
    }
}
