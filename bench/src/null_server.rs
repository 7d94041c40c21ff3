//! A minimal in-process server that answers every native or RESP request
//! with a canned reply, as fast as one thread can: the yardstick for "the
//! generator is not the bottleneck", and (with a one-off stall) the
//! fixture for the coordinated-omission test. Loopback only.
//!
//! Replies — native: GET → NOT_FOUND, PING → PONG, anything else → OK, all
//! with an empty context and the request's id; RESP: GET → nil, SET → OK,
//! PING → PONG, anything else → an error (so redis-benchmark skips its
//! CONFIG probe).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::sys::{pin_and_tune, Epoll};
use crate::target::Protocol;

/// Pause the whole server once.
#[derive(Clone, Copy, Debug)]
pub struct Stall {
    /// Once this many requests have been read (and before their answers
    /// are sent)…
    pub after_requests: u64,
    /// …sleep this long.
    pub duration: Duration,
}

/// How to run the null server.
#[derive(Clone, Debug)]
pub struct NullServerOptions {
    /// Protocol to speak.
    pub protocol: Protocol,
    /// CPU to pin the server thread to.
    pub cpu: Option<usize>,
    /// A one-off stall.
    pub stall: Option<Stall>,
    /// Port on 127.0.0.1 (0: any free one).
    pub port: u16,
}

impl NullServerOptions {
    /// Defaults for `protocol`: any port, no pinning, no stall.
    pub fn new(protocol: Protocol) -> NullServerOptions {
        NullServerOptions {
            protocol,
            cpu: None,
            stall: None,
            port: 0,
        }
    }
}

/// A running null server; stopped on drop.
pub struct NullServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl NullServer {
    /// Binds 127.0.0.1 and starts the server thread.
    pub fn start(opts: NullServerOptions) -> std::io::Result<NullServer> {
        let listener = TcpListener::bind(("127.0.0.1", opts.port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (s2, c2) = (stop.clone(), served.clone());
        let handle = std::thread::Builder::new()
            .name("null-server".into())
            .spawn(move || serve(listener, opts, &s2, &c2))?;
        Ok(NullServer {
            addr,
            stop,
            served,
            handle: Some(handle),
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}

impl Drop for NullServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Peer {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
}

fn serve(listener: TcpListener, opts: NullServerOptions, stop: &AtomicBool, served: &AtomicU64) {
    pin_and_tune(opts.cpu);
    let Ok(epoll) = Epoll::new() else { return };
    const LISTENER: u64 = u64::MAX;
    if epoll.add(listener.as_raw_fd(), LISTENER, false).is_err() {
        return;
    }
    let mut peers: Vec<Option<Peer>> = Vec::new();
    let mut stall = opts.stall;
    let mut count: u64 = 0;
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut ready = Vec::with_capacity(256);
    while !stop.load(Ordering::Relaxed) {
        epoll.wait(&mut events, &mut ready, 50_000_000);
        for &(token, ev) in &ready {
            if token == LISTENER {
                while let Ok((s, _)) = listener.accept() {
                    if s.set_nonblocking(true).is_err() || s.set_nodelay(true).is_err() {
                        continue;
                    }
                    let slot = peers
                        .iter()
                        .position(Option::is_none)
                        .unwrap_or(peers.len());
                    if epoll.add(s.as_raw_fd(), slot as u64, false).is_err() {
                        continue;
                    }
                    let peer = Peer {
                        stream: s,
                        rbuf: vec![0; 256 * 1024],
                        rlen: 0,
                        wbuf: Vec::with_capacity(64 * 1024),
                        wpos: 0,
                    };
                    if slot == peers.len() {
                        peers.push(Some(peer));
                    } else {
                        peers[slot] = Some(peer);
                    }
                }
                continue;
            }
            let i = token as usize;
            let Some(Some(p)) = peers.get_mut(i) else {
                continue;
            };
            let ok = read_and_answer(p, opts.protocol, &mut count, &mut stall) && flush(p);
            let pending = p.wpos < p.wbuf.len();
            if !ok {
                epoll.delete(p.stream.as_raw_fd());
                peers[i] = None;
            } else if pending || ev & libc::EPOLLOUT as u32 != 0 {
                // Watch output only while a reply is stuck in the buffer.
                let _ = epoll.modify(p.stream.as_raw_fd(), token, pending);
            }
        }
        served.store(count, Ordering::Relaxed);
    }
}

fn flush(p: &mut Peer) -> bool {
    while p.wpos < p.wbuf.len() {
        match p.stream.write(&p.wbuf[p.wpos..]) {
            Ok(0) => return false,
            Ok(n) => p.wpos += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    p.wbuf.clear();
    p.wpos = 0;
    true
}

fn read_and_answer(
    p: &mut Peer,
    protocol: Protocol,
    count: &mut u64,
    stall: &mut Option<Stall>,
) -> bool {
    loop {
        if p.rlen == p.rbuf.len() {
            let n = p.rbuf.len() * 2;
            p.rbuf.resize(n, 0);
        }
        let room = p.rbuf.len() - p.rlen;
        let drained = match p.stream.read(&mut p.rbuf[p.rlen..]) {
            Ok(0) => return false,
            Ok(n) => {
                p.rlen += n;
                // A short read emptied the socket: no need for another
                // read just to see EAGAIN (level-triggered epoll wakes us).
                n < room
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        let used = match protocol {
            Protocol::Native | Protocol::NativeSharded => {
                answer_native(&p.rbuf[..p.rlen], &mut p.wbuf, count)
            }
            Protocol::Resp => answer_resp(&p.rbuf[..p.rlen], &mut p.wbuf, count),
        };
        let Some(used) = used else { return false };
        p.rbuf.copy_within(used..p.rlen, 0);
        p.rlen -= used;
        if let Some(s) = *stall {
            if *count >= s.after_requests {
                std::thread::sleep(s.duration);
                *stall = None;
            }
        }
        if !flush(p) {
            return false;
        }
        if drained {
            return true;
        }
    }
}

/// Answers every complete native frame in `buf`; returns bytes consumed
/// (`None`: garbage, drop the connection).
fn answer_native(buf: &[u8], out: &mut Vec<u8>, count: &mut u64) -> Option<usize> {
    let mut at = 0;
    while buf.len() - at >= 4 {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        if len < 10 {
            return None;
        }
        if buf.len() - at < len + 4 {
            break;
        }
        let opcode = buf[at + 5];
        let id = &buf[at + 6..at + 14];
        let (reply, ctx) = match opcode {
            0x01 => (0x82, true),
            0x04 => (0x84, false),
            _ => (0x83, true),
        };
        let body_len: u32 = 10 + if ctx { 4 } else { 0 };
        out.extend_from_slice(&body_len.to_le_bytes());
        out.push(corekv_net::native::VERSION);
        out.push(reply);
        out.extend_from_slice(id);
        if ctx {
            out.extend_from_slice(&0u32.to_le_bytes());
        }
        *count += 1;
        at += len + 4;
    }
    Some(at)
}

fn find_crlf(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let rel = buf.get(at..)?.iter().position(|&b| b == b'\r')?;
        let i = at + rel;
        match buf.get(i + 1) {
            Some(b'\n') => return Some(i),
            Some(_) => at = i + 1,
            None => return None,
        }
    }
}

fn parse_len(b: &[u8]) -> Option<usize> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Answers every complete RESP command in `buf`; returns bytes consumed.
fn answer_resp(buf: &[u8], out: &mut Vec<u8>, count: &mut u64) -> Option<usize> {
    let mut at = 0;
    while at < buf.len() {
        let (name, end) = if buf[at] == b'*' {
            let Some(eol) = find_crlf(buf, at) else { break };
            let n = parse_len(&buf[at + 1..eol])?;
            let mut pos = eol + 2;
            let mut name: &[u8] = b"";
            let mut complete = true;
            for i in 0..n {
                if buf.get(pos) != Some(&b'$') {
                    if pos >= buf.len() {
                        complete = false;
                        break;
                    }
                    return None;
                }
                let Some(e) = find_crlf(buf, pos) else {
                    complete = false;
                    break;
                };
                let l = parse_len(&buf[pos + 1..e])?;
                let arg = e + 2..e + 2 + l;
                if buf.len() < arg.end + 2 {
                    complete = false;
                    break;
                }
                if i == 0 {
                    name = &buf[arg.clone()];
                }
                pos = arg.end + 2;
            }
            if !complete {
                break;
            }
            (name, pos)
        } else {
            let Some(eol) = buf[at..].iter().position(|&b| b == b'\n') else {
                break;
            };
            let line = &buf[at..at + eol];
            let name = line.split(|&b| b == b' ').next().unwrap_or(b"");
            (name, at + eol + 1)
        };
        let reply: &[u8] = if name.eq_ignore_ascii_case(b"GET") {
            b"$-1\r\n"
        } else if name.eq_ignore_ascii_case(b"SET") {
            b"+OK\r\n"
        } else if name.trim_ascii().eq_ignore_ascii_case(b"PING") {
            b"+PONG\r\n"
        } else {
            b"-ERR the null server only knows GET, SET and PING\r\n"
        };
        out.extend_from_slice(reply);
        *count += 1;
        at = end;
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resp_answers_whole_commands_only() {
        let mut out = Vec::new();
        let mut n = 0;
        let cmds =
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\nPING\r\n";
        for cut in 0..cmds.len() {
            out.clear();
            let used = answer_resp(&cmds[..cut], &mut out, &mut n).unwrap();
            assert!(used <= cut);
        }
        out.clear();
        assert_eq!(answer_resp(cmds, &mut out, &mut n), Some(cmds.len()));
        assert_eq!(out, b"$-1\r\n+OK\r\n+PONG\r\n");
    }

    #[test]
    fn native_answers_with_the_request_id() {
        let mut req = Vec::new();
        crate::proto::native_get(&mut req, 77, b"key");
        let mut out = Vec::new();
        let mut n = 0;
        assert_eq!(
            answer_native(&req[..req.len() - 1], &mut out, &mut n),
            Some(0)
        );
        assert_eq!(answer_native(&req, &mut out, &mut n), Some(req.len()));
        let s = crate::proto::native_scan(&out, 1 << 20).unwrap().unwrap();
        assert_eq!(s.id, 77);
        assert_eq!(s.kind, crate::proto::ReplyKind::NotFound);
    }
}
