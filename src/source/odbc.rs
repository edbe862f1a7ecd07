//! ODBC source (cargo feature `odbc`): any ODBC connection string: the
//! Microsoft Access driver on Windows, mdbtools' driver on Linux, any DSN.
//!
//! Values are fetched as text, row by row; numbers, dates and booleans are
//! flagged as typed (canonical) text by the column's SQL type. A failed
//! connect reports the driver's diagnostic, with the connection string's
//! password hidden.

use std::sync::mpsc::SyncSender;

use odbc_api::{ConnectionOptions, Cursor, DataType, Environment, ResultSetMetadata};

use serde::Deserialize;

use super::{
    CellKinds, Kind, Message, ReadStats, Source, SourceColumn, TableInfo, TableReader,
    TableRequest, select_columns,
};
use crate::batch::BatchBuilder;
use crate::error::{Error, Result};

pub struct OdbcSource {
    connection: String,
    label: String,
    tables: Vec<TableInfo>,
}

/// A connection string with its password (`PWD=`, `Password=`) hidden.
pub fn redact_connection(s: &str) -> String {
    s.split(';')
        .map(|kv| match kv.split_once('=') {
            Some((k, _))
                if ["pwd", "password"].contains(&k.trim().to_ascii_lowercase().as_str()) =>
            {
                format!("{k}=***")
            }
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(";")
}

fn odbc_err(label: &str, e: odbc_api::Error) -> Error {
    let msg = e.to_string();
    let hint = if msg.contains("IM002") || msg.contains("Data source name not found") {
        ". Is the driver installed and named as odbcinst -q -d lists it?"
    } else {
        ""
    };
    Error::input(format!("{label}: ODBC: {}{hint}", redact_connection(&msg)))
}

fn is_typed(t: &DataType) -> bool {
    !matches!(
        t,
        DataType::Char { .. }
            | DataType::WChar { .. }
            | DataType::Varchar { .. }
            | DataType::WVarchar { .. }
            | DataType::LongVarchar { .. }
            | DataType::WLongVarchar { .. }
            | DataType::Unknown
    )
}

impl OdbcSource {
    /// Connect once to check the connection string and list the tables.
    pub fn open(connection: &str) -> Result<OdbcSource> {
        let label = format!("odbc:{}", redact_connection(connection));
        let env = Environment::new().map_err(|e| odbc_err(&label, e))?;
        let conn = env
            .connect_with_connection_string(connection, ConnectionOptions::default())
            .map_err(|e| odbc_err(&label, e))?;
        let mut tables = Vec::new();
        // not every driver lists its tables; the mappings name them anyway
        if let Ok(rows) = conn.tables("", "", "", "TABLE") {
            for row in rows.flatten() {
                if let Ok(Some(name)) = row.table.as_str()
                    && !name.starts_with("MSys")
                {
                    tables.push(TableInfo {
                        name: name.to_string(),
                        hidden: false,
                        rows: None,
                    });
                }
            }
        }
        Ok(OdbcSource {
            connection: connection.to_string(),
            label,
            tables,
        })
    }
}

/// `[sources.<name>]` with `kind = "odbc"`: any ODBC data source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OdbcConfig {
    /// The connection string (`Driver={MDBTools};DBQ=…;`); a password in
    /// it belongs in a `${VAR}`.
    pub connection: String,
}

pub const KIND: Kind = Kind {
    name: "odbc",
    open: |name, settings| {
        let c: OdbcConfig = super::settings(name, "odbc", settings)?;
        Ok(Box::new(OdbcSource::open(&c.connection)?))
    },
    check: |settings| super::read_settings::<OdbcConfig>(settings).map(drop),
    open_file: None,
    sniff: None,
};

impl Source for OdbcSource {
    fn describe(&self) -> String {
        self.label.clone()
    }

    fn tables(&self) -> Result<Vec<TableInfo>> {
        Ok(self.tables.clone())
    }

    fn read(&self, req: TableRequest) -> Result<TableReader> {
        let origin = format!("{} › {}", self.label, req.table);
        let (conn_str, label) = (self.connection.clone(), self.label.clone());
        let origin2 = origin.clone();
        TableReader::spawn(origin, None, move |tx| {
            read_table(&conn_str, &label, &origin2, req, tx)
        })
    }
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// `CursorRow::get_text`, except that SQL_NO_DATA, which odbc-api 29 turns
/// into a panic, reads as NULL: mdbtools' driver answers it for an empty
/// string (mdbtools cannot tell "" from NULL; see the fixture README).
fn get_text(
    row: &mut odbc_api::CursorRow<'_>,
    col: u16,
    buf: &mut Vec<u8>,
) -> std::result::Result<bool, odbc_api::Error> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| row.get_text(col, buf)));
    QUIET.with(|q| q.set(false));
    match got {
        Ok(r) => r,
        Err(_) => {
            buf.clear();
            Ok(false)
        }
    }
}

fn read_table(
    conn_str: &str,
    label: &str,
    origin: &str,
    req: TableRequest,
    tx: &SyncSender<Message>,
) -> Result<()> {
    let env = Environment::new().map_err(|e| odbc_err(label, e))?;
    let conn = env
        .connect_with_connection_string(conn_str, ConnectionOptions::default())
        .map_err(|e| odbc_err(label, e))?;
    let query = format!("SELECT * FROM {}", req.table);
    let mut cursor = conn
        .execute(&query, (), None)
        .map_err(|e| odbc_err(origin, e))?
        .ok_or_else(|| Error::input(format!("{origin}: the query returned no result set")))?;
    // SQLDescribeCol: some drivers (mdbtools) leave SQLColAttribute's
    // names empty
    let count = cursor.num_result_cols().map_err(|e| odbc_err(origin, e))? as u16;
    let mut names = Vec::with_capacity(count as usize);
    let mut typed = Vec::with_capacity(count as usize);
    for i in 1..=count {
        let mut desc = odbc_api::ColumnDescription::default();
        cursor
            .describe_col(i, &mut desc)
            .map_err(|e| odbc_err(origin, e))?;
        names.push(
            desc.name_to_string()
                .unwrap_or_else(|_| format!("column {i}")),
        );
        typed.push(is_typed(&desc.data_type));
    }
    let mut headers: Vec<SourceColumn> = names
        .iter()
        .enumerate()
        .map(|(i, n)| SourceColumn {
            header: n.clone(),
            index: i as u32,
            hidden: false,
            feeds: None,
        })
        .collect();
    let (out_names, selected) = select_columns(origin, &mut headers, req.columns.as_deref())?;
    if tx.send(Message::Columns(headers)).is_err() {
        return Ok(());
    }
    // row by row with SQLGetData: every driver supports it (mdbtools has
    // no block cursors), and a long value is read whole, never cut
    let mut builder = BatchBuilder::new(out_names.clone(), req.batch_size);
    let mut kinds = vec![CellKinds::default(); out_names.len()];
    let mut texts: Vec<Option<String>> = vec![None; selected.len()];
    let mut buf = Vec::new();
    let mut n: u64 = 0;
    while let Some(mut row) = cursor.next_row().map_err(|e| odbc_err(origin, e))? {
        n += 1;
        for (slot, sel) in selected.iter().enumerate() {
            texts[slot] = match sel {
                Some(i) => {
                    let present = get_text(&mut row, *i as u16 + 1, &mut buf)
                        .map_err(|e| odbc_err(origin, e))?;
                    present.then(|| String::from_utf8_lossy(&buf).into_owned())
                }
                None => None,
            };
            match (&texts[slot], sel) {
                (None, _) => kinds[slot].empty += 1,
                (Some(_), Some(i)) if typed[*i] => kinds[slot].number += 1,
                (Some(_), _) => kinds[slot].text += 1,
            }
        }
        builder.push_row(
            n,
            texts
                .iter()
                .zip(&selected)
                .map(|(t, sel)| t.as_deref().map(|s| (s, sel.is_some_and(|i| typed[i])))),
        );
        if builder.is_full() {
            let df = builder.take()?;
            if tx.send(Message::Batch(df)).is_err() {
                return Ok(());
            }
        }
    }
    if !builder.is_empty() {
        let df = builder.take()?;
        if tx.send(Message::Batch(df)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.send(Message::Done(ReadStats {
        data_rows: n,
        kinds: out_names.into_iter().zip(kinds).collect(),
        ..Default::default()
    }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            redact_connection("Driver={MDBTools};DBQ=/x.mdb;PWD=s3cret;Uid=me"),
            "Driver={MDBTools};DBQ=/x.mdb;PWD=***;Uid=me"
        );
        assert_eq!(
            redact_connection("DSN=billing;password=x"),
            "DSN=billing;password=***"
        );
    }
}
