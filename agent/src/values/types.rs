//! Checked value types used by every section: a value that deserialises is a valid
//! value, so the stages never see an out-of-range threshold or a URL of the wrong scheme.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};

use super::secret::redact_url;

/// An integer that must lie in `LO..=HI`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IntIn<const LO: i64, const HI: i64>(i64);

impl<const LO: i64, const HI: i64> IntIn<LO, HI> {
    /// Builds the value, or says why it is out of range.
    pub fn new(v: i64) -> Result<Self, String> {
        if (LO..=HI).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("must be {LO}..={HI}, got {v}"))
        }
    }
    /// Builds a value known to be in range (defaults); out-of-range clamps.
    pub const fn lit(v: i64) -> Self {
        let v = if v < LO {
            LO
        } else if v > HI {
            HI
        } else {
            v
        };
        Self(v)
    }
    pub fn get(self) -> i64 {
        self.0
    }
    pub fn as_u32(self) -> u32 {
        self.0 as u32
    }
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl<const LO: i64, const HI: i64> Default for IntIn<LO, HI> {
    /// The lowest allowed value.
    fn default() -> Self {
        Self(LO)
    }
}

impl<const LO: i64, const HI: i64> fmt::Debug for IntIn<LO, HI> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de, const LO: i64, const HI: i64> Deserialize<'de> for IntIn<LO, HI> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        Self::new(v).map_err(de::Error::custom)
    }
}

impl<const LO: i64, const HI: i64> Serialize for IntIn<LO, HI> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

/// A float that must lie in `0.0..=1.0` (fractions, confidences, rates).
#[derive(Clone, Copy, PartialEq, PartialOrd, Debug)]
pub struct Fraction(f64);

impl Fraction {
    pub fn new(v: f64) -> Result<Self, String> {
        if (0.0..=1.0).contains(&v) {
            Ok(Self(v))
        } else {
            Err(format!("must be 0.0..=1.0, got {v}"))
        }
    }
    pub const fn lit(v: f64) -> Self {
        Self(v)
    }
    pub fn get(self) -> f64 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Fraction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = f64::deserialize(d)?;
        Self::new(v).map_err(de::Error::custom)
    }
}

impl Serialize for Fraction {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(self.0)
    }
}

/// A duration written as a string such as `"500ms"`, `"5s"` or `"2m"`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dur(pub Duration);

impl Dur {
    /// The longest duration any setting takes: beyond it a value is a typo, and the
    /// time arithmetic it feeds (`Instant + d`) could overflow.
    pub const MAX: Duration = Duration::from_secs(30 * 24 * 3600);

    /// Parses `"500ms"`, `"5s"`, `"2m"`...; at most [`Dur::MAX`].
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = humantime::parse_duration(s.trim())
            .map_err(|e| format!("invalid duration {s:?}: {e} (write e.g. \"500ms\" or \"5s\")"))?;
        if d > Self::MAX {
            return Err(format!("duration {s:?} is longer than the 30 days allowed"));
        }
        Ok(Self(d))
    }
    pub const fn ms(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl fmt::Debug for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\" or \"5s\"")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Dur, E> {
                Dur::parse(s).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

/// A size in bytes: an integer, or a string such as `"500MB"`, `"2GiB"` or `"64KiB"`
/// (SI units are powers of 1000, binary ones of 1024).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = (t[..split].trim(), t[split..].trim());
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size {s:?} (write e.g. \"500MB\" or \"2GiB\")"))?;
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "tb" | "t" => 1_000_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            "tib" => 1 << 40,
            _ => {
                return Err(format!(
                "invalid size {s:?}: unknown unit {unit:?} (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ))
            }
        };
        let v = n * mult as f64;
        if !v.is_finite() || v > u64::MAX as f64 {
            return Err(format!("size {s:?} is too large"));
        }
        Ok(Self(v as u64))
    }
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a size: bytes as an integer, or a string such as \"500MB\" or \"2GiB\"",
                )
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                ByteSize::parse(s).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("a size cannot be negative, got {v}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // TOML integers are i64.
        s.serialize_i64(self.0.min(i64::MAX as u64) as i64)
    }
}

/// The URL schemes a field accepts.
pub trait Schemes {
    const ALLOWED: &'static [&'static str];
}

/// Camera sources: RTSP for cameras, files and HTTP for replays and tests.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CameraSchemes;
impl Schemes for CameraSchemes {
    const ALLOWED: &'static [&'static str] =
        &["rtsp", "rtsps", "rtspt", "file", "http", "https", "demo"];
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MqttSchemes;
impl Schemes for MqttSchemes {
    const ALLOWED: &'static [&'static str] = &["mqtt", "mqtts", "tcp", "ssl"];
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct AmqpSchemes;
impl Schemes for AmqpSchemes {
    const ALLOWED: &'static [&'static str] = &["amqp", "amqps"];
}

/// A central broker for events (`uplink.url`): MQTT or AMQP, as `uplink.kind` says.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct UplinkSchemes;
impl Schemes for UplinkSchemes {
    const ALLOWED: &'static [&'static str] = &["mqtt", "mqtts", "tcp", "ssl", "amqp", "amqps"];
}

/// A URL that may carry a password. `Display`, `Debug` and `Serialize` redact it;
/// only [`SecretUrl::expose`] gives the real text, for the one place that connects,
/// and `Serialize` inside [`super::secret::reveal`], for the configuration a worker gets.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl<S> {
    raw: String,
    _s: PhantomData<S>,
}

impl<S: Schemes> SecretUrl<S> {
    pub fn parse(raw: &str) -> Result<Self, String> {
        // Free text (a GStreamer error, a log line) can only be redacted up to the
        // first space, so a URL holding one is refused rather than half shown later.
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "a URL may not hold spaces or control characters (write a space as %20, \
                 or put the password in password_file), got {:?}",
                redact_url(raw)
            ));
        }
        let parsed =
            url::Url::parse(raw).map_err(|e| format!("invalid URL {:?}: {e}", redact_url(raw)))?;
        if !S::ALLOWED.contains(&parsed.scheme()) {
            return Err(format!(
                "URL scheme {:?} is not allowed here (expected one of {}), got {:?}",
                parsed.scheme(),
                S::ALLOWED.join(", "),
                redact_url(raw)
            ));
        }
        Ok(Self {
            raw: raw.to_string(),
            _s: PhantomData,
        })
    }
    /// The real URL, password included. Never log it.
    pub fn expose(&self) -> &str {
        &self.raw
    }
    pub fn scheme(&self) -> &str {
        self.raw.split("://").next().unwrap_or("")
    }
    pub fn has_password(&self) -> bool {
        url::Url::parse(&self.raw)
            .map(|u| u.password().is_some())
            .unwrap_or(false)
    }
    /// The URL with its password replaced by `***`, as it is printed (for a process
    /// that must not have it). Redacted as text, not as the URL parser reads it, so
    /// a password it would take for a port or a query goes as well.
    pub fn redacted(&self) -> Self {
        Self {
            raw: redact_url(&self.raw),
            _s: PhantomData,
        }
    }
    /// Returns the URL with its password replaced (for `password_file`).
    pub fn with_password(&self, password: &str) -> Result<Self, String> {
        let mut u = url::Url::parse(&self.raw).map_err(|e| e.to_string())?;
        if u.username().is_empty() {
            return Err(
                "a password_file needs a user name in the URL (scheme://user@host/...)".into(),
            );
        }
        // `set_password` leaves `% + &` as they are, so a password holding them would
        // not read back as itself: escape all but letters, digits and marks that every
        // reader (rumqttc's caller, lapin, rtspsrc) takes literally.
        const PASSWORD: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b'!')
            .remove(b'*')
            .remove(b'(')
            .remove(b')');
        let escaped = percent_encoding::utf8_percent_encode(password, PASSWORD).to_string();
        u.set_password(Some(&escaped))
            .map_err(|_| "this URL cannot carry a password".to_string())?;
        Ok(Self {
            raw: u.to_string(),
            _s: PhantomData,
        })
    }
}

impl<S> fmt::Display for SecretUrl<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.raw))
    }
}

impl<S> fmt::Debug for SecretUrl<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", redact_url(&self.raw))
    }
}

impl<'de, S: Schemes> Deserialize<'de> for SecretUrl<S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(de::Error::custom)
    }
}

impl<S> Serialize for SecretUrl<S> {
    fn serialize<Se: Serializer>(&self, s: Se) -> Result<Se::Ok, Se::Error> {
        if super::secret::revealing() {
            s.serialize_str(&self.raw)
        } else {
            s.serialize_str(&redact_url(&self.raw))
        }
    }
}

/// A non-empty identifier made of letters, digits, `-` and `_` (device and camera ids,
/// which end up in topics, routing keys and metric labels).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Ident(String);

impl Ident {
    pub fn new(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("must be 1 to 64 characters, got {s:?}"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "may hold only letters, digits, '-' and '_', got {s:?}"
            ));
        }
        Ok(Self(s.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Ident {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(de::Error::custom)
    }
}

impl Serialize for Ident {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_integers_or_with_units_and_name_what_is_wrong() {
        let rows: [(&str, Result<u64, &str>); 6] = [
            ("123", Ok(123)),
            ("500MB", Ok(500_000_000)),
            ("2GiB", Ok(2 << 30)),
            ("1.5 KiB", Ok(1536)),
            ("12 parsecs", Err("unknown unit \"parsecs\"")),
            ("lots", Err("invalid size \"lots\"")),
        ];
        for (text, want) in rows {
            match (ByteSize::parse(text), want) {
                (Ok(v), Ok(w)) => assert_eq!(v.get(), w, "{text}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn durations_parse_up_to_thirty_days_and_name_what_is_wrong() {
        let rows: [(&str, Result<Duration, &str>); 6] = [
            ("500ms", Ok(Duration::from_millis(500))),
            (" 5s ", Ok(Duration::from_secs(5))),
            ("30days", Ok(Dur::MAX)),
            ("0s", Ok(Duration::ZERO)),
            (
                "30days 1s",
                Err("duration \"30days 1s\" is longer than the 30 days allowed"),
            ),
            (
                "300000000000y",
                Err("duration \"300000000000y\" is longer than the 30 days allowed"),
            ),
        ];
        for (input, want) in rows {
            assert_eq!(
                Dur::parse(input).map(Dur::get),
                want.map_err(str::to_string),
                "input {input:?}"
            );
        }
        assert_eq!(
            Dur::parse("10 parsecs").unwrap_err(),
            "invalid duration \"10 parsecs\": unknown time unit \"parsecs\", supported units: ns, us/µs, ms, sec, min, hours, days, weeks, months, years (and few variations) (write e.g. \"500ms\" or \"5s\")"
        );
    }
}
