//! Request-target canonicalization: the one function that turns what a client sent into the
//! target that is both evaluated and forwarded. Anything two parsers could read differently is
//! rejected rather than guessed at.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// The upstream scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        if s.eq_ignore_ascii_case("http") {
            Some(Scheme::Http)
        } else if s.eq_ignore_ascii_case("https") {
            Some(Scheme::Https)
        } else {
            None
        }
    }
}

/// Why a target was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("unsupported scheme; only http and https are proxied")]
    Scheme,
    #[error("ambiguous request target authority")]
    AmbiguousAuthority,
    #[error("userinfo in the request target is not allowed")]
    UserInfo,
    #[error("invalid host: {0}")]
    Host(&'static str),
    #[error("invalid port")]
    Port,
    #[error("Host header does not match the request target authority")]
    HostMismatch,
    #[error("path must start with '/'")]
    Relative,
    #[error("invalid percent-encoding in the request target")]
    BadEscape,
    #[error("encoded '/', '\\', '%' or NUL in the path is ambiguous")]
    EncodedDelimiter,
    #[error("backslash in the path is ambiguous")]
    Backslash,
    #[error("fragment in the request target")]
    Fragment,
    #[error("character not allowed in the request target")]
    BadChar,
    #[error("dot-segments climb above the root")]
    AboveRoot,
    #[error("dot-segment with path parameters is ambiguous")]
    DotParam,
    #[error("both Content-Length and Transfer-Encoding are present")]
    ConflictingLength,
}

/// A canonical request target: what the policy sees and what the upstream receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lowercase ASCII, no trailing dot; IPv4 dotted-quad; IPv6 without brackets, compressed.
    pub host: String,
    pub port: u16,
    /// Normalized path, always starting with '/'.
    pub path: String,
    /// The path with `;params` removed from every segment, when it had any.
    pub path_without_params: Option<String>,
    /// The query as sent (validated), without the '?'.
    pub query: Option<String>,
}

impl Target {
    /// `host[:port]` as written in a Host header (port omitted when it is the default).
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == self.scheme.default_port() {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// The origin-form request target sent upstream.
    pub fn origin_form(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{}", self.path, q),
            None => self.path.clone(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}{}",
            self.scheme.as_str(),
            self.authority(),
            self.origin_form()
        )
    }
}

/// Parses an absolute-form target (`http://host:port/path?query`) and checks that the Host
/// header, when present, names the same authority.
pub fn absolute_form(raw: &[u8], host_header: Option<&[u8]>) -> Result<Target, NormalizeError> {
    use pingora::protocols::http::authority::{raw_target_authority, RawTargetAuthority};
    let (scheme, authority, rest) = match raw_target_authority(raw) {
        RawTargetAuthority::Absolute {
            scheme,
            authority,
            path_and_query,
        } => (scheme, authority, path_and_query),
        RawTargetAuthority::AmbiguousAuthority => return Err(NormalizeError::AmbiguousAuthority),
        RawTargetAuthority::None => return Err(NormalizeError::Relative),
    };
    let scheme = std::str::from_utf8(scheme)
        .ok()
        .and_then(Scheme::parse)
        .ok_or(NormalizeError::Scheme)?;
    let (host, port) = parse_authority(authority, scheme)?;
    if let Some(header) = host_header {
        if parse_authority(header, scheme)? != (host.clone(), port) {
            return Err(NormalizeError::HostMismatch);
        }
    }
    let rest = if rest.is_empty() {
        b"/".as_slice()
    } else {
        rest
    };
    let (path, path_without_params, query) = path_and_query(rest)?;
    Ok(Target {
        scheme,
        host,
        port,
        path,
        path_without_params,
        query,
    })
}

/// Splits and normalizes an origin-form `path?query`.
#[allow(clippy::type_complexity)]
pub fn path_and_query(
    raw: &[u8],
) -> Result<(String, Option<String>, Option<String>), NormalizeError> {
    if raw.contains(&b'#') {
        return Err(NormalizeError::Fragment);
    }
    let (path, query) = match raw.iter().position(|&b| b == b'?') {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let (path, without_params) = normalize_path(path)?;
    let query = match query {
        Some(q) => Some(check_query(q)?),
        None => None,
    };
    Ok((path, without_params, query))
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters RFC 3986 allows in a path or query besides unreserved and '%'.
fn is_sub_delim_or_pchar(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'=' | b':' | b'@'
    )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes every `%XX` (invalid escapes are kept as written), optionally `+` as space, as
/// query strings and forms mean them. For matching and parameters, never for forwarding.
pub fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match (escape, bytes[i]) {
            (Some((h, l)), _) => {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
            (None, b'+') if plus_is_space => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn check_query(q: &[u8]) -> Result<String, NormalizeError> {
    let mut i = 0;
    while i < q.len() {
        let b = q[i];
        if b == b'%' {
            match (
                q.get(i + 1).copied().and_then(hex),
                q.get(i + 2).copied().and_then(hex),
            ) {
                (Some(_), Some(_)) => i += 3,
                _ => return Err(NormalizeError::BadEscape),
            }
            continue;
        }
        // Visible ASCII passes (clients leave `"`, `<`, `|`… unescaped in queries, and the
        // query is matched decoded); controls, spaces and non-ASCII do not.
        if !(0x21..=0x7e).contains(&b) {
            return Err(NormalizeError::BadChar);
        }
        i += 1;
    }
    // Every byte was checked to be ASCII above.
    String::from_utf8(q.to_vec()).map_err(|_| NormalizeError::BadChar)
}

/// Normalizes an origin-form path: decodes percent-encoded unreserved characters (and only
/// those), upper-cases remaining escapes, merges duplicate slashes and resolves dot-segments.
/// Returns the path and, if any segment carries `;params`, the path with them stripped.
pub fn normalize_path(raw: &[u8]) -> Result<(String, Option<String>), NormalizeError> {
    if raw.first() != Some(&b'/') {
        return Err(NormalizeError::Relative);
    }
    // Pass 1: decode unreserved escapes; refuse anything two parsers might disagree on.
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        match b {
            b'%' => {
                let (Some(h), Some(l)) = (
                    raw.get(i + 1).copied().and_then(hex),
                    raw.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(NormalizeError::BadEscape);
                };
                let v = h << 4 | l;
                if is_unreserved(v) {
                    decoded.push(v as char);
                } else if matches!(v, b'/' | b'\\' | 0 | b'%') {
                    // An encoded '%' is refused too: a second decoding would change the path.
                    return Err(NormalizeError::EncodedDelimiter);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(h)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(l)]));
                }
                i += 3;
                continue;
            }
            b'\\' => return Err(NormalizeError::Backslash),
            b'#' => return Err(NormalizeError::Fragment),
            b'/' => decoded.push('/'),
            _ if is_unreserved(b) || is_sub_delim_or_pchar(b) => decoded.push(b as char),
            _ => return Err(NormalizeError::BadChar),
        }
        i += 1;
    }

    // Pass 2: resolve dot-segments as RFC 3986 and WHATWG do (empty segments count, so
    // `/a//..` is `/a/`), then merge duplicate slashes in the result.
    let mut out: Vec<&str> = Vec::new();
    let mut has_params = false;
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut ends_in_dir = decoded.ends_with('/');
    for (n, seg) in segments.iter().enumerate() {
        let bare = seg.split(';').next().unwrap_or("");
        if seg.contains(';') {
            has_params = true;
            if bare == "." || bare == ".." {
                return Err(NormalizeError::DotParam);
            }
        }
        match *seg {
            "." => {
                if n == last {
                    ends_in_dir = true;
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err(NormalizeError::AboveRoot);
                }
                if n == last {
                    ends_in_dir = true;
                }
            }
            s => out.push(s),
        }
    }
    out.retain(|s| !s.is_empty());
    let join = |segs: &mut dyn Iterator<Item = &str>| {
        let mut p = String::with_capacity(decoded.len());
        for s in segs {
            p.push('/');
            p.push_str(s);
        }
        if p.is_empty() || ends_in_dir {
            p.push('/');
        }
        p
    };
    let path = join(&mut out.iter().copied());
    let without = if has_params {
        Some(join(
            &mut out
                .iter()
                .map(|s| s.split(';').next().unwrap_or(""))
                .filter(|s| !s.is_empty()),
        ))
    } else {
        None
    };
    Ok((path, without))
}

/// Parses `host[:port]` (IPv6 in brackets) into a canonical host and a port.
pub fn parse_authority(raw: &[u8], scheme: Scheme) -> Result<(String, u16), NormalizeError> {
    let text = std::str::from_utf8(raw).map_err(|_| NormalizeError::Host("not UTF-8"))?;
    if text.contains('@') {
        return Err(NormalizeError::UserInfo);
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let end = rest.find(']').ok_or(NormalizeError::Host("unclosed '['"))?;
        let v6: Ipv6Addr = rest[..end]
            .parse()
            .map_err(|_| NormalizeError::Host("invalid IPv6 address"))?;
        let after = &rest[end + 1..];
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(NormalizeError::Port)?),
        };
        (v6.to_string(), port)
    } else {
        let (h, p) = match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        };
        (normalize_host(h)?, p)
    };
    let port = match port {
        None | Some("") => scheme.default_port(),
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) && p.len() <= 5 => {
            match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(NormalizeError::Port),
                Ok(n) => n,
            }
        }
        Some(_) => return Err(NormalizeError::Port),
    };
    Ok((host, port))
}

/// Canonicalizes a host name (not bracketed) as the WHATWG URL standard does: IDNA (UTS 46)
/// to ASCII (which lowercases), one trailing dot removed, IPv4 in every spelling (`0x7f.1`,
/// `2130706433`, `0177.0.0.1`) to dotted-quad. Stricter than the standard: percent-encoded
/// hosts and characters outside letters, digits, '-' and '_' are refused.
pub fn normalize_host(raw: &str) -> Result<String, NormalizeError> {
    if raw.is_empty() {
        return Err(NormalizeError::Host("empty"));
    }
    if raw.contains('%') {
        return Err(NormalizeError::Host("percent-encoded host"));
    }
    // Plain ASCII names (the common case) map to themselves lowercased; only non-ASCII and
    // punycode labels need the full UTS 46 processing.
    let ascii = if raw.is_ascii() && !raw.to_ascii_lowercase().contains("xn--") {
        std::borrow::Cow::Owned(raw.to_ascii_lowercase())
    } else {
        idna::domain_to_ascii_cow(raw.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| NormalizeError::Host("not a valid domain name (IDNA)"))?
    };
    let host = ascii.strip_suffix('.').unwrap_or(&ascii);
    if host.is_empty() {
        return Err(NormalizeError::Host("empty"));
    }
    if ends_in_number(host) {
        return parse_ipv4(host)
            .map(|ip| ip.to_string())
            .ok_or(NormalizeError::Host("invalid IPv4 address"));
    }
    if host.len() > 253 {
        return Err(NormalizeError::Host("longer than 253 characters"));
    }
    for label in host.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(NormalizeError::Host("empty or over-long label"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NormalizeError::Host("character not allowed"));
        }
    }
    Ok(host.to_string())
}

/// WHATWG "ends in a number": the last label is decimal digits or a 0x hex number.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or("");
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match last.strip_prefix("0x") {
        Some(h) => h.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// The WHATWG IPv4 parser: 1–4 parts, each decimal, octal (leading 0) or hex (0x).
fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for part in &parts {
        let (digits, radix) = if let Some(h) = part.strip_prefix("0x") {
            (h, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (*part, 10)
        };
        let n = if digits.is_empty() {
            if part.is_empty() {
                return None;
            }
            0
        } else {
            u64::from_str_radix(digits, radix).ok()?
        };
        nums.push(n);
    }
    let (last, init) = nums.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    if *last >= 256u64.pow(5 - nums.len() as u32) {
        return None;
    }
    let mut v = *last;
    for (i, n) in init.iter().enumerate() {
        v += n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(v).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(p: &str) -> Result<String, NormalizeError> {
        normalize_path(p.as_bytes()).map(|(p, _)| p)
    }

    #[test]
    fn paths_normalize() {
        let ok: &[(&str, &str)] = &[
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a//b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/b/", "/a/b/"),
            ("//a", "/a"),
            ("/%61%62", "/ab"),
            ("/a/%2e%2E/b", "/b"),
            ("/a%2d%7e", "/a-~"),
            ("/a%3ab", "/a%3Ab"),
            ("/a%20b", "/a%20b"),
        ];
        for (raw, want) in ok {
            assert_eq!(path(raw).as_deref(), Ok(*want), "{raw}");
        }
        let bad: &[(&str, NormalizeError)] = &[
            ("/..", NormalizeError::AboveRoot),
            ("/a/../..", NormalizeError::AboveRoot),
            ("/%2e%2e/x", NormalizeError::AboveRoot),
            ("/a%2fb", NormalizeError::EncodedDelimiter),
            ("/a%5cb", NormalizeError::EncodedDelimiter),
            ("/a%00", NormalizeError::EncodedDelimiter),
            ("/a%252e", NormalizeError::EncodedDelimiter),
            ("/a%zz", NormalizeError::BadEscape),
            ("/a%4", NormalizeError::BadEscape),
            ("/a\\b", NormalizeError::Backslash),
            ("/a#b", NormalizeError::Fragment),
            ("/a b", NormalizeError::BadChar),
            ("/a/..;/b", NormalizeError::DotParam),
            ("a", NormalizeError::Relative),
        ];
        for (raw, want) in bad {
            assert_eq!(path(raw).as_ref(), Err(want), "{raw}");
        }
    }

    #[test]
    fn params_are_stripped_for_matching() {
        let (p, w) = normalize_path(b"/admin;x=1/secret").unwrap();
        assert_eq!(p, "/admin;x=1/secret");
        assert_eq!(w.as_deref(), Some("/admin/secret"));
    }

    #[test]
    fn hosts_canonicalize() {
        let ok: &[(&str, &str)] = &[
            ("Example.COM", "example.com"),
            ("example.com.", "example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("2130706433", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("0177.0.0.1", "127.0.0.1"),
            ("0x7F000001", "127.0.0.1"),
            ("169.254.43518", "169.254.169.254"),
            ("1.2.3.4.", "1.2.3.4"),
        ];
        for (raw, want) in ok {
            assert_eq!(normalize_host(raw).as_deref(), Ok(*want), "{raw}");
        }
        for bad in [
            "",
            ".",
            "a..b",
            "1.2.3.256",
            "1.2.3.4.5",
            "09.1.1.1",
            "ex ample.com",
            "xn--a.com",
            "a%2ecom",
        ] {
            assert!(normalize_host(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_host("bücher.de").as_deref(),
            Ok("xn--bcher-kva.de")
        );
        assert_eq!(
            normalize_host("BÜCHER.de").as_deref(),
            Ok("xn--bcher-kva.de")
        );
        assert_eq!(
            normalize_host("ｅｘａｍｐｌｅ。com").as_deref(),
            Ok("example.com")
        );
        assert_eq!(normalize_host("０x７f.1").as_deref(), Ok("127.0.0.1"));
    }

    #[test]
    fn authority_and_host_header() {
        let t = absolute_form(b"http://EXAMPLE.com:80/a/../b?q=1", Some(b"example.com")).unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("example.com", 80, "/b")
        );
        assert_eq!(t.query.as_deref(), Some("q=1"));
        assert_eq!(t.to_string(), "http://example.com/b?q=1");
        assert_eq!(
            absolute_form(b"http://a.com/", Some(b"b.com")),
            Err(NormalizeError::HostMismatch)
        );
        assert_eq!(
            absolute_form(b"http://u:p@a.com/", None),
            Err(NormalizeError::UserInfo)
        );
        let v6 = absolute_form(b"http://[0:0::1]:8080", None).unwrap();
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(v6.authority(), "[::1]:8080");
        assert!(absolute_form(b"ftp://a.com/", None).is_err());
        assert!(absolute_form(b"http://a.com:99999/", None).is_err());
    }
}
