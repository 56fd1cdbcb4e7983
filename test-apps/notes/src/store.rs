//! The SQLite store: a synchronous driver, as many apps still use.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// A note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub id: i64,
    pub title: String,
    pub body: String,
}

/// Opens (creating if needed) the database at `path`.
///
/// # Errors
///
/// SQLite's.
pub fn open(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL, body TEXT NOT NULL);
         CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, hash TEXT NOT NULL);",
    )?;
    Ok(conn)
}

/// Inserts a note and returns it with its id.
///
/// # Errors
///
/// SQLite's.
pub fn insert(conn: &rusqlite::Connection, title: &str, body: &str) -> rusqlite::Result<Note> {
    conn.execute("INSERT INTO notes (title, body) VALUES (?1, ?2)", (title, body))?;
    Ok(Note { id: conn.last_insert_rowid(), title: title.to_owned(), body: body.to_owned() })
}

/// Looks a note up.
///
/// # Errors
///
/// SQLite's; a missing note is `Ok(None)`.
pub fn find(conn: &rusqlite::Connection, id: i64) -> rusqlite::Result<Option<Note>> {
    let mut stmt = conn.prepare_cached("SELECT id, title, body FROM notes WHERE id = ?1")?;
    let mut rows = stmt.query([id])?;
    let row = rows.next()?; // blocks: stat64
    match row {
        Some(row) => Ok(Some(Note { id: row.get(0)?, title: row.get(1)?, body: row.get(2)? })),
        None => Ok(None),
    }
}

/// Stores a user's password hash.
///
/// # Errors
///
/// SQLite's.
pub fn save_user(conn: &rusqlite::Connection, name: &str, hash: &str) -> rusqlite::Result<()> {
    conn.execute("INSERT OR REPLACE INTO users (name, hash) VALUES (?1, ?2)", (name, hash))?;
    Ok(())
}
