//! One DNS exchange over std sockets: UDP first, TCP when the request is larger than 512
//! bytes or the answer comes back truncated (TC). Plus the unsigned lookups the crate and its
//! tests use to read a zone back: [`query`] and [`soa_serial`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as HType};

use crate::{DnsError, RecordType};

/// Requests above this size go over TCP from the start (RFC 1035's UDP limit; an UPDATE
/// carries no EDNS negotiation we could rely on).
const UDP_LIMIT: usize = 512;

pub(crate) fn htype(t: RecordType) -> HType {
    match t {
        RecordType::A => HType::A,
        RecordType::Aaaa => HType::AAAA,
        RecordType::Cname => HType::CNAME,
        RecordType::Txt => HType::TXT,
    }
}

pub(crate) fn name(fqdn: &str) -> Result<Name, DnsError> {
    Name::from_ascii(crate::fqdn(fqdn)).map_err(|e| DnsError::BadRecord {
        name: fqdn.to_string(),
        detail: format!("not a domain name ({e})"),
    })
}

pub(crate) fn random_id() -> u16 {
    let mut b = [0u8; 2];
    // A predictable id only weakens spoofing protection of unsigned queries; never fatal.
    let _ = getrandom::getrandom(&mut b);
    u16::from_be_bytes(b)
}

/// The record data for one normalized value (see `normalize_values`).
pub(crate) fn rdata(rtype: RecordType, value: &str) -> Result<RData, DnsError> {
    let bad = |d: String| DnsError::BadRecord {
        name: value.to_string(),
        detail: d,
    };
    Ok(match rtype {
        RecordType::A => RData::A(A(value
            .parse()
            .map_err(|_| bad("not an IPv4 address".into()))?)),
        RecordType::Aaaa => RData::AAAA(AAAA(
            value
                .parse()
                .map_err(|_| bad("not an IPv6 address".into()))?,
        )),
        RecordType::Cname => RData::CNAME(CNAME(name(value)?)),
        // A character-string holds at most 255 bytes; longer values are split, and read back
        // joined (RFC 7208 3.3 does the same for SPF).
        RecordType::Txt => RData::TXT(TXT::from_bytes(value.as_bytes().chunks(255).collect())),
    })
}

/// One answer's value in the canonical text form (`normalize_values` produces the same).
pub(crate) fn value_of(data: &RData) -> Option<String> {
    match data {
        RData::A(a) => Some(a.0.to_string()),
        RData::AAAA(a) => Some(a.0.to_string()),
        RData::CNAME(c) => Some(c.0.to_ascii().to_ascii_lowercase()),
        RData::TXT(t) => Some(String::from_utf8_lossy(&t.txt_data().concat()).into_owned()),
        _ => None,
    }
}

/// Sends `request` and returns the raw answer with the same id. `what` names the record or
/// zone for errors.
pub(crate) fn exchange(
    server: SocketAddr,
    request: &[u8],
    timeout: Duration,
    what: &str,
) -> Result<Vec<u8>, DnsError> {
    let unreachable = |detail: String| DnsError::Unreachable {
        server: server.to_string(),
        name: what.to_string(),
        detail,
    };
    if request.len() > UDP_LIMIT {
        return exchange_tcp(server, request, timeout)
            .map_err(|e| unreachable(format!("TCP: {e}")));
    }
    let answer =
        exchange_udp(server, request, timeout).map_err(|e| unreachable(format!("UDP: {e}")))?;
    // The TC bit is bit 1 of the third header byte.
    if answer.len() >= 3 && answer[2] & 0x02 != 0 {
        return exchange_tcp(server, request, timeout)
            .map_err(|e| unreachable(format!("TCP after a truncated UDP answer: {e}")));
    }
    Ok(answer)
}

fn exchange_udp(server: SocketAddr, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(local)?;
    socket.connect(server)?;
    let deadline = Instant::now() + timeout;
    // One resend halfway through: a lost datagram should not cost the whole timeout.
    let mut resent = false;
    socket.send(request)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer in {timeout:?}"),
            ));
        }
        let halfway = deadline - timeout / 2;
        let wait = if !resent && now < halfway {
            halfway - now
        } else {
            deadline - now
        };
        socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
        match socket.recv(&mut buf) {
            // Only the answer to this request (same id) counts; a late answer to an earlier
            // attempt is skipped.
            Ok(n) if n >= 12 && buf[..2] == request[..2] => return Ok(buf[..n].to_vec()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if !resent {
                    resent = true;
                    socket.send(request)?;
                }
            }
            Err(e) => return Err(e),
        }
    }
}

fn exchange_tcp(server: SocketAddr, request: &[u8], timeout: Duration) -> std::io::Result<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&server, timeout)?;
    let left = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream.set_write_timeout(Some(left()))?;
    let len = u16::try_from(request.len())
        .map_err(|_| std::io::Error::other("message larger than 64 KiB"))?;
    let mut framed = Vec::with_capacity(request.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(request);
    stream.write_all(&framed)?;
    loop {
        stream.set_read_timeout(Some(left()))?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut answer = vec![0u8; u16::from_be_bytes(len) as usize];
        stream.read_exact(&mut answer)?;
        if answer.len() >= 12 && answer[..2] == request[..2] {
            return Ok(answer);
        }
    }
}

pub(crate) fn parse(server: SocketAddr, what: &str, bytes: &[u8]) -> Result<Message, DnsError> {
    Message::from_vec(bytes).map_err(|e| DnsError::Protocol {
        server: server.to_string(),
        name: what.to_string(),
        detail: format!("cannot decode the answer: {e}"),
    })
}

fn lookup(
    server: SocketAddr,
    qname: &Name,
    qtype: HType,
    timeout: Duration,
) -> Result<Message, DnsError> {
    let what = qname.to_ascii();
    let mut msg = Message::new();
    msg.set_id(random_id())
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false);
    let mut q = Query::query(qname.clone(), qtype);
    q.set_query_class(DNSClass::IN);
    msg.add_query(q);
    // Advertise a larger UDP buffer so most answers need no TCP retry.
    let mut edns = Edns::new();
    edns.set_max_payload(1232).set_version(0);
    msg.set_edns(edns);
    let bytes = msg.to_vec().map_err(|e| DnsError::BadRecord {
        name: what.clone(),
        detail: e.to_string(),
    })?;
    let answer = parse(server, &what, &exchange(server, &bytes, timeout, &what)?)?;
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        code => Err(DnsError::Rcode {
            server: server.to_string(),
            name: what,
            code: code.to_str(),
            advice: "check that this server is authoritative for the zone",
        }),
    }
}

/// The values `server` answers for `name`/`rtype`, sorted; empty when the name or type does
/// not exist. Asks without recursion: meant for the zone's own (authoritative) server.
pub fn query(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
) -> Result<Vec<String>, DnsError> {
    let qname = self::name(name)?;
    let answer = lookup(server, &qname, htype(rtype), timeout)?;
    let mut values: Vec<String> = answer
        .answers()
        .iter()
        .filter(|r: &&Record| r.record_type() == htype(rtype) && r.name() == &qname)
        .filter_map(|r| value_of(r.data()))
        .collect();
    values.sort();
    values.dedup();
    Ok(values)
}

/// The zone's SOA serial as `server` answers it: it grows with every change, so a test (or a
/// dry run) can prove that nothing changed.
pub fn soa_serial(server: SocketAddr, zone: &str, timeout: Duration) -> Result<u32, DnsError> {
    let qname = name(zone)?;
    let answer = lookup(server, &qname, HType::SOA, timeout)?;
    answer
        .answers()
        .iter()
        .find_map(|r| match r.data() {
            RData::SOA(soa) => Some(soa.serial()),
            _ => None,
        })
        .ok_or_else(|| DnsError::Rcode {
            server: server.to_string(),
            name: qname.to_ascii(),
            code: answer.response_code().to_str(),
            advice: "no SOA in the answer: the server is not authoritative for this zone; check zone and server",
        })
}
