//! `--regional host|LOCALE[,ZONE]`: the locale and time zone Windows is set up with, as Windows names them.
//! POSIX locales (`de_DE.UTF-8`, `sr_RS@latin`) and Windows ones (`de-DE`) map through CLDR's locales, IANA
//! zones (`Europe/Berlin`) through CLDR's windowsZones (`tables.rs`, generated); `host` reads this machine's
//! locale and zone (pure parsers here, and a thin reader of the environment and /etc).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::tables::{LOCALES, ZONES};

/// What `--regional` writes: Windows names, already checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regional {
    /// The locale (InputLocale, SystemLocale, UserLocale): `de-DE`.
    pub locale: String,
    /// The display language (UILanguage): the Windows language pack for the locale's language.
    pub ui_language: String,
    /// The Windows time zone (`W. Europe Standard Time`); None: Windows keeps its own.
    pub time_zone: Option<String>,
}

/// The fallback display language for text a language pack leaves untranslated (UILanguageFallback).
pub const UI_FALLBACK: &str = "en-US";

/// Windows 11's display languages (its language packs), each language's default first: a locale whose own name
/// is not among them gets its language's first one, else `UI_FALLBACK`. From Microsoft's list of the languages
/// Windows is available in.
const UI_LANGUAGES: &[&str] = &[
    "ar-SA",
    "bg-BG",
    "cs-CZ",
    "da-DK",
    "de-DE",
    "el-GR",
    "en-US",
    "en-GB",
    "es-ES",
    "es-MX",
    "et-EE",
    "fi-FI",
    "fr-FR",
    "fr-CA",
    "he-IL",
    "hr-HR",
    "hu-HU",
    "it-IT",
    "ja-JP",
    "ko-KR",
    "lt-LT",
    "lv-LV",
    "nb-NO",
    "nl-NL",
    "pl-PL",
    "pt-PT",
    "pt-BR",
    "ro-RO",
    "ru-RU",
    "sk-SK",
    "sl-SI",
    "sr-Latn-RS",
    "sv-SE",
    "th-TH",
    "tr-TR",
    "uk-UA",
    "zh-CN",
    "zh-TW",
];

/// Why `--regional` cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegionalError {
    #[error("--regional {given:?}: expected host, LOCALE or LOCALE,ZONE (e.g. de_DE.UTF-8,Europe/Berlin)")]
    Syntax { given: String },
    #[error(
        "--regional: the locale {locale:?}{from} names no language and country (C and POSIX are not \
         locales Windows has); give one, e.g. --regional en_US,Europe/London"
    )]
    NoLanguage { locale: String, from: String },
    #[error("--regional: the locale {locale:?}{from} names no country; give one of {candidates}")]
    NoCountry { locale: String, from: String, candidates: String },
    #[error(
        "--regional: the locale {locale:?}{from} is not one Windows knows (CLDR has no such locale); give e.g. de_DE or de-DE"
    )]
    UnknownLocale { locale: String, from: String },
    #[error(
        "--regional: the time zone {zone:?}{from} has no Windows equivalent in CLDR's table; give a zone \
         such as Europe/Berlin, or a Windows zone name such as \"W. Europe Standard Time\""
    )]
    UnknownZone { zone: String, from: String },
    #[error("--regional host: cannot tell this machine's locale: {why}; give it, e.g. --regional de_DE,Europe/Berlin")]
    HostLocale { why: String },
    #[error(
        "--regional host: cannot tell this machine's time zone: {why}; give it, e.g. --regional de_DE,Europe/Berlin"
    )]
    HostZone { why: String },
}

/// What `--regional` asked for, before it is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// This machine's locale and zone.
    Host,
    /// A locale, and a zone or none (Windows keeps its own).
    Given { locale: String, zone: Option<String> },
}

/// The option's text: `host`, `LOCALE` or `LOCALE,ZONE`.
pub fn parse_request(s: &str) -> Result<Request, RegionalError> {
    let syntax = || RegionalError::Syntax { given: s.to_string() };
    if s.eq_ignore_ascii_case("host") {
        return Ok(Request::Host);
    }
    let mut parts = s.split(',');
    let locale = parts.next().unwrap_or("").trim();
    let zone = parts.next().map(str::trim);
    if parts.next().is_some() || locale.is_empty() || zone == Some("") {
        return Err(syntax());
    }
    Ok(Request::Given { locale: locale.to_string(), zone: zone.map(str::to_string) })
}

/// The request turned into Windows names; `host` reads this machine (see `read_host`).
pub fn resolve(req: &Request) -> Result<Regional, RegionalError> {
    match req {
        Request::Host => {
            let (locale, lfrom) = host_locale(&|k| std::env::var(k).ok(), Path::new("/"))?;
            let (zone, zfrom) = host_zone(&|k| std::env::var(k).ok(), Path::new("/"))?;
            regional(&locale, &lfrom, Some((&zone, &zfrom)))
        }
        Request::Given { locale, zone } => regional(locale, "", zone.as_deref().map(|z| (z, ""))),
    }
}

/// The Windows names for a locale and an optional zone; `from` says where each came from, for messages.
pub fn regional(locale: &str, lfrom: &str, zone: Option<(&str, &str)>) -> Result<Regional, RegionalError> {
    let locale = windows_locale(locale, lfrom)?;
    let time_zone = match zone {
        Some((z, zfrom)) => Some(windows_zone(z, zfrom)?),
        None => None,
    };
    Ok(Regional { ui_language: ui_language(&locale).to_string(), locale, time_zone })
}

fn lookup<'a>(table: &'a [(&'a str, &'a str)], key: &str) -> Option<&'a str> {
    table.binary_search_by(|(k, _)| (*k).cmp(key)).ok().map(|i| table[i].1)
}

/// A POSIX (`de_DE.UTF-8`, `sr_RS@latin`) or Windows (`de-DE`, `sr-Latn-RS`) locale name -> Windows' name.
pub fn windows_locale(given: &str, from: &str) -> Result<String, RegionalError> {
    let from = if from.is_empty() { String::new() } else { format!(" (from {from})") };
    let (rest, modifier) = given.split_once('@').unwrap_or((given, ""));
    let base = rest.split_once('.').map_or(rest, |(b, _)| b);
    if base.is_empty() || base == "C" || base == "POSIX" {
        return Err(RegionalError::NoLanguage { locale: given.to_string(), from });
    }
    let mut parts: Vec<String> = base.split(['_', '-']).map(str::to_lowercase).collect();
    let script = match modifier {
        "latin" => Some("latn"),
        "cyrillic" => Some("cyrl"),
        "devanagari" => Some("deva"),
        // Other modifiers (euro, valencia, ...) change nothing Windows sets here.
        _ => None,
    };
    if let (Some(s), 2) = (script, parts.len()) {
        parts.insert(1, s.to_string());
    }
    if parts.len() == 1 {
        let prefix = format!("{}_", parts[0]);
        let mut c: Vec<&str> = LOCALES.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(_, v)| *v).collect();
        c.dedup();
        if !c.is_empty() {
            let shown = if c.len() > 8 { format!("{}, …", c[..8].join(", ")) } else { c.join(", ") };
            return Err(RegionalError::NoCountry { locale: given.to_string(), from, candidates: shown });
        }
    }
    lookup(LOCALES, &parts.join("_"))
        .map(str::to_string)
        .ok_or_else(|| RegionalError::UnknownLocale { locale: given.to_string(), from })
}

/// An IANA zone (`Europe/Berlin`, also `:Europe/Berlin` or a path under zoneinfo as TZ may give it) or a
/// Windows zone name -> Windows' zone name.
pub fn windows_zone(given: &str, from: &str) -> Result<String, RegionalError> {
    let z = given.trim_start_matches(':');
    let z = z.rsplit_once("zoneinfo/").map_or(z, |(_, tail)| tail);
    if let Some(w) = lookup(ZONES, z) {
        return Ok(w.to_string());
    }
    if let Some((_, w)) = ZONES.iter().find(|(_, w)| w.eq_ignore_ascii_case(z)) {
        return Ok(w.to_string());
    }
    let from = if from.is_empty() { String::new() } else { format!(" (from {from})") };
    Err(RegionalError::UnknownZone { zone: given.to_string(), from })
}

/// The display language for a Windows locale: its own language pack, else its language's default one, else
/// `UI_FALLBACK`.
pub fn ui_language(locale: &str) -> &'static str {
    if let Some(l) = UI_LANGUAGES.iter().find(|l| l.eq_ignore_ascii_case(locale)) {
        return l;
    }
    let lang = locale.split('-').next().unwrap_or("");
    // Traditional Chinese outside Taiwan (Hong Kong, Macao) reads zh-TW.
    if lang == "zh" && (locale.ends_with("-HK") || locale.ends_with("-MO")) {
        return "zh-TW";
    }
    UI_LANGUAGES.iter().find(|l| l.split('-').next() == Some(lang)).copied().unwrap_or(UI_FALLBACK)
}

/// The `LANG` (or `LC_ALL`) of a locale file: /etc/default/locale, /etc/locale.conf (shell-style `KEY=value`,
/// maybe quoted, `#` comments).
pub fn parse_locale_file(text: &str) -> Option<String> {
    let mut lang = None;
    let mut all = None;
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else { continue };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
        if v.is_empty() {
            continue;
        }
        match k.trim() {
            "LC_ALL" => all = Some(v),
            "LANG" => lang = Some(v),
            _ => {}
        }
    }
    all.or(lang)
}

/// The zone named by /etc/localtime's link target (`/usr/share/zoneinfo/Europe/Berlin`, `../usr/share/zoneinfo/…`).
pub fn zone_from_link(target: &Path) -> Option<String> {
    let s = target.to_str()?;
    let (_, tail) = s.rsplit_once("zoneinfo/")?;
    let tail = tail.strip_prefix("posix/").or_else(|| tail.strip_prefix("right/")).unwrap_or(tail);
    (!tail.is_empty()).then(|| tail.to_string())
}

/// This machine's locale and where it was found: LC_ALL, then LANG, then /etc/default/locale, then
/// /etc/locale.conf (under `root`).
pub fn host_locale(env: &dyn Fn(&str) -> Option<String>, root: &Path) -> Result<(String, String), RegionalError> {
    for var in ["LC_ALL", "LANG"] {
        if let Some(v) = env(var).filter(|v| !v.is_empty()) {
            return Ok((v, format!("${var}")));
        }
    }
    for file in ["etc/default/locale", "etc/locale.conf"] {
        if let Some(v) = std::fs::read_to_string(root.join(file)).ok().as_deref().and_then(parse_locale_file) {
            return Ok((v, format!("/{file}")));
        }
    }
    Err(RegionalError::HostLocale {
        why: "LC_ALL and LANG are unset, and neither /etc/default/locale nor /etc/locale.conf sets LANG".into(),
    })
}

/// This machine's time zone and where it was found: TZ, then the /etc/localtime link, then /etc/timezone
/// (under `root`).
pub fn host_zone(env: &dyn Fn(&str) -> Option<String>, root: &Path) -> Result<(String, String), RegionalError> {
    if let Some(v) = env("TZ").filter(|v| !v.is_empty()) {
        return Ok((v, "$TZ".into()));
    }
    if let Some(z) = std::fs::read_link(root.join("etc/localtime")).ok().as_deref().and_then(zone_from_link) {
        return Ok((z, "the /etc/localtime link".into()));
    }
    if let Ok(text) = std::fs::read_to_string(root.join("etc/timezone")) {
        let z = text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
        if let Some(z) = z {
            return Ok((z.to_string(), "/etc/timezone".into()));
        }
    }
    Err(RegionalError::HostZone {
        why: "TZ is unset, /etc/localtime is not a link into zoneinfo, and /etc/timezone names no zone".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Result<String, RegionalError> {
        windows_locale(s, "")
    }

    #[test]
    fn tables_are_sorted_for_binary_search() {
        assert!(ZONES.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(LOCALES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn posix_and_windows_locales() {
        for (given, want) in [
            ("de_DE.UTF-8", "de-DE"),
            ("de_DE@euro", "de-DE"),
            ("de_DE.ISO-8859-15@euro", "de-DE"),
            ("de-DE", "de-DE"),
            ("en_US", "en-US"),
            ("fr_CA.utf8", "fr-CA"),
            ("pt_BR.UTF-8", "pt-BR"),
            ("sr_RS", "sr-Cyrl-RS"),
            ("sr_RS@latin", "sr-Latn-RS"),
            ("sr-Latn-RS", "sr-Latn-RS"),
            ("zh_CN.UTF-8", "zh-CN"),
            ("zh_TW", "zh-TW"),
            ("uz_UZ@cyrillic", "uz-Cyrl-UZ"),
            ("nb_NO", "nb-NO"),
        ] {
            assert_eq!(loc(given).as_deref(), Ok(want), "{given}");
        }
    }

    #[test]
    fn locale_refusals() {
        for c in ["C", "POSIX", "C.UTF-8", ""] {
            assert!(matches!(loc(c), Err(RegionalError::NoLanguage { .. })), "{c}");
        }
        let e = loc("de").unwrap_err();
        assert!(matches!(e, RegionalError::NoCountry { .. }));
        assert!(e.to_string().contains("de-DE") && e.to_string().contains("de-AT"), "{e}");
        assert!(matches!(loc("xx_YY"), Err(RegionalError::UnknownLocale { .. })));
        assert!(matches!(loc("de_XX"), Err(RegionalError::UnknownLocale { .. })));
        let e = windows_locale("C.UTF-8", "$LANG").unwrap_err().to_string();
        assert!(e.contains("\"C.UTF-8\" (from $LANG) names no language"), "{e}");
    }

    #[test]
    fn zones() {
        for (given, want) in [
            ("Europe/Berlin", "W. Europe Standard Time"),
            ("America/New_York", "Eastern Standard Time"),
            ("Asia/Kolkata", "India Standard Time"),
            ("Asia/Calcutta", "India Standard Time"),
            ("Europe/Kyiv", "FLE Standard Time"),
            ("Etc/UTC", "UTC"),
            ("UTC", "UTC"),
            (":Europe/Paris", "Romance Standard Time"),
            ("/usr/share/zoneinfo/Asia/Tokyo", "Tokyo Standard Time"),
            ("W. Europe Standard Time", "W. Europe Standard Time"),
            ("pacific standard time", "Pacific Standard Time"),
        ] {
            assert_eq!(windows_zone(given, "").as_deref(), Ok(want), "{given}");
        }
        for bad in ["Mars/Olympus", "CET-1CEST", "europe/berlin", ""] {
            assert!(matches!(windows_zone(bad, ""), Err(RegionalError::UnknownZone { .. })), "{bad}");
        }
    }

    #[test]
    fn ui_languages() {
        assert_eq!(ui_language("de-DE"), "de-DE");
        assert_eq!(ui_language("de-AT"), "de-DE");
        assert_eq!(ui_language("en-AU"), "en-US");
        assert_eq!(ui_language("en-GB"), "en-GB");
        assert_eq!(ui_language("pt-AO"), "pt-PT");
        assert_eq!(ui_language("zh-HK"), "zh-TW");
        assert_eq!(ui_language("zh-SG"), "zh-CN");
        assert_eq!(ui_language("ca-ES"), "en-US");
        assert_eq!(ui_language("sr-Latn-RS"), "sr-Latn-RS");
    }

    #[test]
    fn requests() {
        assert_eq!(parse_request("host"), Ok(Request::Host));
        assert_eq!(parse_request("HOST"), Ok(Request::Host));
        assert_eq!(parse_request("de_DE"), Ok(Request::Given { locale: "de_DE".into(), zone: None }));
        assert_eq!(
            parse_request("de_DE.UTF-8,Europe/Berlin"),
            Ok(Request::Given { locale: "de_DE.UTF-8".into(), zone: Some("Europe/Berlin".into()) })
        );
        for bad in ["", ",Europe/Berlin", "de_DE,", "a,b,c"] {
            assert!(matches!(parse_request(bad), Err(RegionalError::Syntax { .. })), "{bad:?}");
        }
        let r = regional("de_AT.UTF-8", "", Some(("Europe/Vienna", ""))).unwrap();
        assert_eq!(
            r,
            Regional {
                locale: "de-AT".into(),
                ui_language: "de-DE".into(),
                time_zone: Some("W. Europe Standard Time".into())
            }
        );
        assert_eq!(regional("en_US", "", None).unwrap().time_zone, None);
    }

    #[test]
    fn locale_files() {
        assert_eq!(
            parse_locale_file("#  File generated by update-locale\nLANG=de_DE.UTF-8\n").as_deref(),
            Some("de_DE.UTF-8")
        );
        assert_eq!(parse_locale_file("LANG=\"fr_FR.UTF-8\"\nLC_TIME=en_GB.UTF-8\n").as_deref(), Some("fr_FR.UTF-8"));
        assert_eq!(parse_locale_file("LANG=en_US.UTF-8\nLC_ALL=sv_SE.UTF-8\n").as_deref(), Some("sv_SE.UTF-8"));
        assert_eq!(parse_locale_file("export LANG='it_IT.UTF-8'").as_deref(), Some("it_IT.UTF-8"));
        assert_eq!(parse_locale_file("#  File generated by update-locale\n"), None);
        assert_eq!(parse_locale_file("LANG=\n"), None);
    }

    #[test]
    fn localtime_links() {
        let z = |p: &str| zone_from_link(Path::new(p));
        assert_eq!(z("/usr/share/zoneinfo/Europe/Berlin").as_deref(), Some("Europe/Berlin"));
        assert_eq!(
            z("../usr/share/zoneinfo/America/Argentina/Buenos_Aires").as_deref(),
            Some("America/Argentina/Buenos_Aires")
        );
        assert_eq!(z("/usr/share/zoneinfo/posix/Asia/Tokyo").as_deref(), Some("Asia/Tokyo"));
        assert_eq!(z("/etc/static/localtime"), None);
        assert_eq!(z("/usr/share/zoneinfo/"), None);
    }

    #[test]
    fn host_readers_on_fixture_roots() {
        let none = |_: &str| None;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/default")).unwrap();
        // Nothing to go by: both refuse, saying what they looked at.
        let e = host_locale(&none, root).unwrap_err().to_string();
        assert!(e.contains("LC_ALL and LANG are unset"), "{e}");
        let e = host_zone(&none, root).unwrap_err().to_string();
        assert!(e.contains("cannot tell this machine's time zone"), "{e}");
        // Files.
        std::fs::write(root.join("etc/locale.conf"), "LANG=pl_PL.UTF-8\n").unwrap();
        assert_eq!(host_locale(&none, root), Ok(("pl_PL.UTF-8".into(), "/etc/locale.conf".into())));
        std::fs::write(root.join("etc/default/locale"), "LANG=de_DE.UTF-8\n").unwrap();
        assert_eq!(host_locale(&none, root), Ok(("de_DE.UTF-8".into(), "/etc/default/locale".into())));
        std::fs::write(root.join("etc/timezone"), "Europe/Madrid\n").unwrap();
        assert_eq!(host_zone(&none, root), Ok(("Europe/Madrid".into(), "/etc/timezone".into())));
        std::os::unix::fs::symlink("/usr/share/zoneinfo/Europe/Rome", root.join("etc/localtime")).unwrap();
        assert_eq!(host_zone(&none, root), Ok(("Europe/Rome".into(), "the /etc/localtime link".into())));
        // The environment comes first.
        let env = |k: &str| match k {
            "LANG" => Some("fi_FI.UTF-8".to_string()),
            "TZ" => Some(":Europe/Helsinki".to_string()),
            _ => None,
        };
        assert_eq!(host_locale(&env, root), Ok(("fi_FI.UTF-8".into(), "$LANG".into())));
        assert_eq!(host_zone(&env, root), Ok((":Europe/Helsinki".into(), "$TZ".into())));
        let all = |k: &str| (k == "LC_ALL" || k == "LANG").then(|| format!("{k}-value"));
        assert_eq!(host_locale(&all, root).unwrap().1, "$LC_ALL");
    }
}
