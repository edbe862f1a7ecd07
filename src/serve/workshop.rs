//! Workshop: appointments per technician and day, the completed
//! interventions with their time and parts, the manufacturers' documents
//! (search, download of the current revision).

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::auth::require;
use super::{Section, Shared, esc, esc_opt, failed, page, status_page, table, url_encode};
use crate::daemon::ftp::register::{self, DocRow};
use crate::daemon::queue::store::{APPOINTMENTS, BILLABLE, INTERVENTIONS};
use crate::db::{Conn, Row};
use crate::error::Result;

/// Documents listed per search.
const DOCS: usize = 100;

struct Overview {
    per_day: Vec<Row>,
    done: Vec<Row>,
    parts: Vec<Row>,
    docs: Vec<DocRow>,
    docs_found: usize,
}

fn overview(conn: &mut dyn Conn, words: Vec<String>) -> Result<Overview> {
    let d = conn.dialect();
    let per_day = if conn.table_exists(APPOINTMENTS)? {
        let day = format!("substr({}, 1, 10)", d.as_text("start_at"));
        conn.query(
            &format!(
                "SELECT coalesce(technician_id, '—'), {day}, count(*) FROM {APPOINTMENTS} WHERE status <> 'cancelled' AND start_at IS NOT NULL GROUP BY coalesce(technician_id, '—'), {day} ORDER BY 2 DESC, 1 LIMIT 300"
            ),
            &[],
        )?
    } else {
        Vec::new()
    };
    let cols = conn.columns(INTERVENTIONS)?;
    let (done, parts) = if cols.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        let has = |c: &str| cols.iter().any(|x| x.eq_ignore_ascii_case(c));
        let reference = if has("reference") {
            format!("coalesce(reference, {})", d.as_text("id"))
        } else {
            d.as_text("id")
        };
        let tech = if has("technician_ref") {
            format!("coalesce(technician_ref, {})", d.as_text("technician_id"))
        } else {
            d.as_text("technician_id")
        };
        let done = conn.query(
            &format!(
                "SELECT {reference}, {}, {tech}, intervention_type, {}, {} FROM {INTERVENTIONS} i WHERE status = 'Terminee' ORDER BY i.performed_at DESC LIMIT 50",
                d.as_text("performed_at"),
                d.as_text("duration_minutes"),
                d.as_text("amount_excl_tax"),
            ),
            &[],
        )?;
        let parts = if conn.table_exists(BILLABLE)? {
            conn.query(
                &format!(
                    "SELECT intervention_id, reference, {} FROM {BILLABLE} WHERE kind = 'part' ORDER BY completed_at DESC LIMIT 500",
                    d.as_text("quantity")
                ),
                &[],
            )?
        } else {
            Vec::new()
        };
        (done, parts)
    };
    let query = register::Query {
        words,
        ..register::Query::default()
    };
    let found = register::search(conn, &query)?;
    let docs_found = found.len();
    Ok(Overview {
        per_day,
        done,
        parts,
        docs: found.into_iter().take(DOCS).collect(),
        docs_found,
    })
}

#[derive(Deserialize, Default)]
pub struct WorkshopQuery {
    #[serde(default)]
    q: String,
}

pub async fn show(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<WorkshopQuery>,
) -> Response {
    let s = match require(&app, &headers, Section::Workshop) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let words: Vec<String> =
        q.q.split_whitespace()
            .take(10)
            .map(|w| w.chars().take(100).collect())
            .collect();
    let o = match app.read(move |c| overview(c, words)).await {
        Ok(o) => o,
        Err(e) => return failed(&s, "workshop", &e),
    };
    let mut body = String::from("<h3>Appointments per technician and day</h3>");
    let rows: Vec<Vec<String>> = o
        .per_day
        .iter()
        .map(|r| r.iter().map(esc_opt).collect())
        .collect();
    body.push_str(&table(
        "appointments",
        &["technician", "day", "appointments"],
        &rows,
    ));
    body.push_str("<h3>Completed interventions (latest 50)</h3>");
    let rows: Vec<Vec<String>> = o
        .done
        .iter()
        .map(|r| {
            let mut cells: Vec<String> = r.iter().map(esc_opt).collect();
            let key = r.first().cloned().flatten().unwrap_or_default();
            let used: Vec<String> = o
                .parts
                .iter()
                .filter(|p| p.first().cloned().flatten().as_deref() == Some(key.as_str()))
                .map(|p| format!("{} × {}", esc_opt(&p[2]), esc_opt(&p[1])))
                .collect();
            cells.push(used.join(", "));
            cells
        })
        .collect();
    body.push_str(&table(
        "interventions",
        &[
            "intervention",
            "performed",
            "technician",
            "type",
            "minutes",
            "amount excl. tax",
            "parts",
        ],
        &rows,
    ));
    body.push_str(&format!(
        "<h3>Manufacturer documents</h3><form method=\"get\" action=\"/workshop\"><label>Search <input name=\"q\" value=\"{}\"></label><button>Search</button></form><p><span id=\"docs-found\">{}</span> current documents found.</p>",
        esc(&q.q),
        o.docs_found
    ));
    let rows: Vec<Vec<String>> = o
        .docs
        .iter()
        .map(|d| {
            vec![
                esc(&d.manufacturer),
                format!(
                    "<a href=\"/workshop/document?reference={}&amp;lang={}\">{}</a>",
                    url_encode(&d.reference),
                    url_encode(&d.language),
                    esc(&d.reference)
                ),
                esc(&d.language),
                format!("R{}", d.revision),
                esc_opt(&d.title),
                esc_opt(&d.doc_type),
                esc_opt(&d.model),
                esc(&d.status),
            ]
        })
        .collect();
    body.push_str(&table(
        "documents",
        &[
            "manufacturer",
            "reference",
            "language",
            "revision",
            "title",
            "type",
            "model",
            "status",
        ],
        &rows,
    ));
    page(Section::Workshop.title(), Some(&s), &body).into_response()
}

#[derive(Deserialize)]
pub struct DocQuery {
    reference: String,
    #[serde(default)]
    lang: Option<String>,
}

/// The current revision of a reference, in the language asked for (else
/// English, else the only one), as a download.
pub async fn download(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<DocQuery>,
) -> Response {
    let s = match require(&app, &headers, Section::Workshop) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let reference = q.reference.clone();
    let versions = match app.read(move |c| register::current(c, &reference)).await {
        Ok(v) => v,
        Err(e) => return failed(&s, "document", &e),
    };
    let current: Vec<&DocRow> = versions.iter().filter(|d| d.status == "current").collect();
    let want = q.lang.as_deref().unwrap_or("EN");
    let doc = current
        .iter()
        .find(|d| d.language.eq_ignore_ascii_case(want))
        .or_else(|| (current.len() == 1).then(|| &current[0]))
        .copied();
    let Some(doc) = doc else {
        return status_page(
            StatusCode::NOT_FOUND,
            Some(&s),
            &format!("no current revision of {:?}", q.reference),
        );
    };
    // the path comes from the register the FTP feed wrote, not from the request
    let bytes = match tokio::fs::read(&doc.local_path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                "dashboard: document {}: {}: {e}",
                doc.reference,
                doc.local_path
            );
            return status_page(
                StatusCode::NOT_FOUND,
                Some(&s),
                &format!("the file of {} is missing on the server", doc.reference),
            );
        }
    };
    let name = std::path::Path::new(&doc.local_path)
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| format!("{}.pdf", doc.reference));
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let ty = if safe.to_lowercase().ends_with(".pdf") {
        "application/pdf"
    } else {
        "application/octet-stream"
    };
    tracing::info!(user = %s.user, reference = %doc.reference, "dashboard: document downloaded");
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    r
}
