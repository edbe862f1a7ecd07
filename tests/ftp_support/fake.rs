//! A small in-process FTP server (plain FTP, passive) for the faults a
//! real server cannot be made to show on demand: a data connection
//! dropped after N bytes, `REST` refused, no `MLSD` (Unix or DOS `LIST`),
//! Latin-1 names, files changed between two listings. Names are bytes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Mlsd,
    Unix,
    Dos,
}

/// A file of a listing: name, size, time.
type Listed = (Vec<u8>, usize, chrono::NaiveDateTime);

#[derive(Debug, Default)]
pub struct State {
    /// Full path (bytes, from `/`) → (content, modification time).
    pub files: BTreeMap<Vec<u8>, (Vec<u8>, chrono::NaiveDateTime)>,
    /// Folders answering 550.
    pub denied: BTreeSet<Vec<u8>>,
    pub format: Option<ListFormat>,
    pub no_rest: bool,
    /// Path → (bytes sent before the data connection is dropped, how many
    /// transfers are cut so).
    pub cut: HashMap<Vec<u8>, (usize, u32)>,
    /// Every RETR: (path, offset).
    pub retr: Vec<(Vec<u8>, u64)>,
    pub password: String,
}

impl State {
    pub fn put(&mut self, path: &[u8], content: &[u8], minute: u32) {
        let t = chrono::NaiveDate::from_ymd_opt(2026, 11, 2)
            .unwrap()
            .and_hms_opt(8 + minute / 60, minute % 60, 0)
            .unwrap();
        self.files.insert(path.to_vec(), (content.to_vec(), t));
    }

    pub fn retr_of(&self, path: &[u8]) -> Vec<u64> {
        self.retr
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, o)| *o)
            .collect()
    }

    fn children(&self, dir: &[u8]) -> (BTreeSet<Vec<u8>>, Vec<Listed>) {
        let prefix: Vec<u8> = if dir == b"/" {
            b"/".to_vec()
        } else {
            [dir, b"/"].concat()
        };
        let mut dirs = BTreeSet::new();
        let mut files = Vec::new();
        for (p, (c, t)) in &self.files {
            if let Some(rest) = p.strip_prefix(prefix.as_slice()) {
                match rest.iter().position(|b| *b == b'/') {
                    Some(i) => {
                        dirs.insert(rest[..i].to_vec());
                    }
                    None => files.push((rest.to_vec(), c.len(), *t)),
                }
            }
        }
        (dirs, files)
    }

    fn is_dir(&self, dir: &[u8]) -> bool {
        dir == b"/"
            || self
                .files
                .keys()
                .any(|p| p.starts_with(&[dir, b"/"].concat()))
    }
}

pub struct Fake {
    pub port: u16,
    pub state: Arc<Mutex<State>>,
}

impl Fake {
    pub async fn start(state: State) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let st = st.clone();
                tokio::spawn(async move {
                    let _ = session(sock, st).await;
                });
            }
        });
        Fake { port, state }
    }
}

fn norm(arg: &[u8]) -> Vec<u8> {
    let mut p = if arg.starts_with(b"/") {
        arg.to_vec()
    } else {
        [b"/", arg].concat()
    };
    while p.len() > 1 && p.ends_with(b"/") {
        p.pop();
    }
    p
}

async fn session(sock: TcpStream, st: Arc<Mutex<State>>) -> std::io::Result<()> {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    w.write_all(b"220 fake FTP\r\n").await?;
    let mut pasv: Option<TcpListener> = None;
    let mut rest: u64 = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(());
        }
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        let (cmd, arg) = match line.iter().position(|b| *b == b' ') {
            Some(i) => (&line[..i], &line[i + 1..]),
            None => (&line[..], &b""[..]),
        };
        let cmd = String::from_utf8_lossy(cmd).to_uppercase();
        let reply: Vec<u8> = match cmd.as_str() {
            "USER" => b"331 password please\r\n".to_vec(),
            "PASS" => {
                if arg == st.lock().unwrap().password.as_bytes() {
                    b"230 logged in\r\n".to_vec()
                } else {
                    b"530 login incorrect\r\n".to_vec()
                }
            }
            "SYST" => b"215 UNIX Type: L8\r\n".to_vec(),
            "TYPE" | "OPTS" | "NOOP" => b"200 ok\r\n".to_vec(),
            "PWD" => b"257 \"/\"\r\n".to_vec(),
            "CWD" => b"250 ok\r\n".to_vec(),
            "QUIT" => {
                w.write_all(b"221 bye\r\n").await?;
                return Ok(());
            }
            "EPSV" => {
                let l = TcpListener::bind("127.0.0.1:0").await?;
                let port = l.local_addr()?.port();
                pasv = Some(l);
                format!("229 Entering Extended Passive Mode (|||{port}|)\r\n").into_bytes()
            }
            "PASV" => {
                let l = TcpListener::bind("127.0.0.1:0").await?;
                let port = l.local_addr()?.port();
                pasv = Some(l);
                format!(
                    "227 Entering Passive Mode (127,0,0,1,{},{})\r\n",
                    port / 256,
                    port % 256
                )
                .into_bytes()
            }
            "REST" => {
                if st.lock().unwrap().no_rest {
                    b"502 REST not implemented\r\n".to_vec()
                } else {
                    rest = String::from_utf8_lossy(arg).trim().parse().unwrap_or(0);
                    format!("350 restarting at {rest}\r\n").into_bytes()
                }
            }
            "SIZE" => {
                let p = norm(arg);
                match st.lock().unwrap().files.get(&p) {
                    Some((c, _)) => format!("213 {}\r\n", c.len()).into_bytes(),
                    None => b"550 no such file\r\n".to_vec(),
                }
            }
            "MLSD" | "LIST" => {
                let p = norm(arg);
                let (lines, refusal) = {
                    let s = st.lock().unwrap();
                    let format = s.format.unwrap_or(ListFormat::Mlsd);
                    if cmd == "MLSD" && format != ListFormat::Mlsd {
                        (Vec::new(), Some(b"500 MLSD not understood\r\n".to_vec()))
                    } else if s.denied.contains(&p) {
                        (Vec::new(), Some(b"550 Permission denied\r\n".to_vec()))
                    } else if !s.is_dir(&p) {
                        (Vec::new(), Some(b"550 No such directory\r\n".to_vec()))
                    } else {
                        let (dirs, files) = s.children(&p);
                        let denied: Vec<Vec<u8>> = s.denied.iter().cloned().collect();
                        let mut lines: Vec<Vec<u8>> = Vec::new();
                        let mut dir_names: BTreeSet<Vec<u8>> = dirs;
                        for d in &denied {
                            let parent = match d.iter().rposition(|b| *b == b'/') {
                                Some(0) => b"/".to_vec(),
                                Some(i) => d[..i].to_vec(),
                                None => continue,
                            };
                            if parent == p {
                                let i = d.iter().rposition(|b| *b == b'/').unwrap();
                                dir_names.insert(d[i + 1..].to_vec());
                            }
                        }
                        let stamp = chrono::NaiveDate::from_ymd_opt(2026, 11, 1)
                            .unwrap()
                            .and_hms_opt(9, 0, 0)
                            .unwrap();
                        for d in dir_names {
                            lines.push(entry(format, true, &d, 0, stamp));
                        }
                        for (n, size, t) in files {
                            lines.push(entry(format, false, &n, size, t));
                        }
                        (lines, None)
                    }
                };
                if let Some(refusal) = refusal {
                    refusal
                } else {
                    let Some(l) = pasv.take() else {
                        w.write_all(b"425 use PASV first\r\n").await?;
                        continue;
                    };
                    w.write_all(b"150 listing\r\n").await?;
                    let (mut data, _) = l.accept().await?;
                    for line in lines {
                        data.write_all(&line).await?;
                        data.write_all(b"\r\n").await?;
                    }
                    data.shutdown().await?;
                    drop(data);
                    b"226 done\r\n".to_vec()
                }
            }
            "RETR" => {
                let p = norm(arg);
                let offset = std::mem::take(&mut rest);
                let (content, cut) = {
                    let mut s = st.lock().unwrap();
                    s.retr.push((p.clone(), offset));
                    let content = s.files.get(&p).map(|(c, _)| c.clone());
                    let cut = match s.cut.get_mut(&p) {
                        Some((n, times)) if *times > 0 => {
                            *times -= 1;
                            Some(*n)
                        }
                        _ => None,
                    };
                    (content, cut)
                };
                match content {
                    None => b"550 no such file\r\n".to_vec(),
                    Some(c) => {
                        let Some(l) = pasv.take() else {
                            w.write_all(b"425 use PASV first\r\n").await?;
                            continue;
                        };
                        w.write_all(b"150 sending\r\n").await?;
                        let (mut data, _) = l.accept().await?;
                        let body = &c[(offset as usize).min(c.len())..];
                        match cut {
                            Some(n) if n < body.len() => {
                                data.write_all(&body[..n]).await?;
                                // dropped before the end
                                drop(data);
                                b"426 Connection closed; transfer aborted\r\n".to_vec()
                            }
                            _ => {
                                data.write_all(body).await?;
                                data.shutdown().await?;
                                drop(data);
                                b"226 transfer complete\r\n".to_vec()
                            }
                        }
                    }
                }
            }
            _ => b"502 not implemented\r\n".to_vec(),
        };
        w.write_all(&reply).await?;
    }
}

fn entry(
    format: ListFormat,
    dir: bool,
    name: &[u8],
    size: usize,
    t: chrono::NaiveDateTime,
) -> Vec<u8> {
    let head = match format {
        ListFormat::Mlsd => format!(
            "type={};size={size};modify={};UNIX.mode=0644; ",
            if dir { "dir" } else { "file" },
            t.format("%Y%m%d%H%M%S")
        ),
        ListFormat::Unix => format!(
            "{} 1 ftp ftp {size:>12} {} ",
            if dir { "drwxr-xr-x" } else { "-rw-r--r--" },
            t.format("%b %d %H:%M")
        ),
        ListFormat::Dos => format!(
            "{}       {} ",
            t.format("%m-%d-%y  %I:%M%p"),
            if dir {
                "<DIR>         ".to_string()
            } else {
                format!("{size:>14}")
            }
        ),
    };
    [head.as_bytes(), name].concat()
}
