//! The offline revocation check: the Authenticode SHA-256, signing certificates and SBAT of each UEFI loader the
//! stick will boot, against this PC's forbidden-signature database (dbx), its db and shim's SbatLevel, read from
//! efivarfs. Nothing is ever downloaded: a PC without efivars (not booted through UEFI) is simply not checked.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::uefi::MAX_LOADER_BYTES;

/// Where Linux shows the UEFI variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_IMAGE_SECURITY_DATABASE_GUID: the vendor GUID of db and dbx.
pub const SECURITY_DATABASE_GUID: &str = "d719b2cb-3d3a-4596-a3bc-dad00e67656f";
/// SHIM_LOCK_GUID: the vendor GUID of shim's SbatLevel variables.
pub const SHIM_LOCK_GUID: &str = "605dab50-e046-4300-abb6-3dd810dd8b23";
/// The most of one variable woesafe reads (a real dbx is about 15–30 KiB, a db 5–10 KiB).
pub const MAX_VARIABLE_BYTES: u64 = 1 << 20;
/// The most of a loader's `.sbat` section woesafe reads (shim's and GRUB's are a few hundred bytes).
pub const MAX_SBAT_BYTES: usize = 64 << 10;
/// The most SBAT entries read from one loader or SbatLevel (real ones have fewer than ten).
pub const MAX_SBAT_ENTRIES: usize = 256;
/// The most certificates kept from one loader's signatures (a real one has two to four).
pub const MAX_LOADER_CERTS: usize = 64;
/// The most signatures (WIN_CERTIFICATE entries) read from one loader (shim has two, Windows' loaders one).
pub const MAX_SIGNATURES: usize = 16;
/// The sentence every revocation warning ends with.
pub const WONT_BOOT: &str = "this stick will not boot on this PC with Secure Boot on; try --ca2023";

/// EFI_CERT_SHA256_GUID c1c41626-504c-4092-aca9-41f936934328 as it is stored (EFI_GUID: the first three fields
/// little-endian).
const CERT_SHA256: [u8; 16] = guid(0xc1c41626, 0x504c, 0x4092, [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28]);
/// EFI_CERT_X509_GUID a5c059a1-94e4-4aa7-87b5-ab155c2bf072.
const CERT_X509: [u8; 16] = guid(0xa5c059a1, 0x94e4, 0x4aa7, [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72]);
/// EFI_CERT_X509_SHA256_GUID 3bd2a492-96c0-4079-b420-fcf98ef103ed: the SHA-256 of a TBSCertificate.
const CERT_X509_SHA256: [u8; 16] = guid(0x3bd2a492, 0x96c0, 0x4079, [0xb4, 0x20, 0xfc, 0xf9, 0x8e, 0xf1, 0x03, 0xed]);
/// EFI_SIGNATURE_LIST's fixed header: SignatureType, SignatureListSize, SignatureHeaderSize, SignatureSize.
const LIST_HEADER: usize = 28;
/// Each EFI_SIGNATURE_DATA starts with its SignatureOwner GUID.
const OWNER: usize = 16;

const fn guid(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let (a, b, c) = (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
    [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
}

#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    #[error("cannot read the UEFI variable {variable}: {source}")]
    Read {
        variable: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the UEFI variable {variable} is not a regular file in efivarfs")]
    NotAFile { variable: String },
    #[error("the UEFI variable {variable} is bigger than woesafe reads ({MAX_VARIABLE_BYTES} bytes)")]
    TooBig { variable: String },
    #[error("the UEFI variable {variable} is malformed: {what}")]
    Malformed { variable: String, what: String },
    #[error("not a PE image woesafe can check: {what}")]
    BadPe { what: String },
}

/// Where to read the UEFI variables: [`EFIVARS`]; debug builds honour `WOESAFE_TEST_EFIVARS` (a fixture dir).
pub fn efivars_dir() -> PathBuf {
    #[cfg(debug_assertions)]
    if let Some(dir) = std::env::var_os("WOESAFE_TEST_EFIVARS") {
        return PathBuf::from(dir);
    }
    PathBuf::from(EFIVARS)
}

/// One signature database (db or dbx), the entries woesafe can compare; other types are counted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignatureDb {
    /// EFI_CERT_SHA256: Authenticode SHA-256 image hashes.
    pub sha256: Vec<[u8; 32]>,
    /// EFI_CERT_X509: DER certificates.
    pub x509: Vec<Vec<u8>>,
    /// EFI_CERT_X509_SHA256: SHA-256 of a certificate's TBSCertificate.
    pub x509_sha256: Vec<[u8; 32]>,
    /// Entries of other types (SHA-1, RSA-2048, …), skipped.
    pub skipped: usize,
}

/// One SBAT entry: `component,generation` (the other CSV fields are for people).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SbatEntry {
    pub component: String,
    pub generation: u32,
}

/// This PC's Secure Boot databases, as far as Linux shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firmware {
    pub dbx: SignatureDb,
    /// None when the PC shows no db.
    pub db: Option<SignatureDb>,
    /// shim's SbatLevel (its runtime copy SbatLevelRT, else SbatLevel) when present: the variable's name and
    /// its entries (the first, `sbat,1,DATE`, included).
    pub sbat_level: Option<(String, Vec<SbatEntry>)>,
}

/// Load this PC's dbx, db and SbatLevel from an efivarfs directory. `Ok(None)` when there is no dbx (no
/// efivars at all: not booted through UEFI, or a PC without Secure Boot databases).
pub fn load(dir: &Path) -> Result<Option<Firmware>, RevocationError> {
    let Some(dbx) = read_variable(dir, &format!("dbx-{SECURITY_DATABASE_GUID}"))? else {
        return Ok(None);
    };
    let dbx = parse_signature_lists("dbx", &dbx)?;
    let db = match read_variable(dir, &format!("db-{SECURITY_DATABASE_GUID}"))? {
        Some(data) => Some(parse_signature_lists("db", &data)?),
        None => None,
    };
    // SbatLevel is information beside the dbx check: one that cannot be read is left out, never an error.
    let mut sbat_level = None;
    for name in ["SbatLevelRT", "SbatLevel"] {
        if let Ok(Some(data)) = read_variable(dir, &format!("{name}-{SHIM_LOCK_GUID}")) {
            sbat_level = Some((name.to_string(), parse_sbat(&data)));
            break;
        }
    }
    Ok(Some(Firmware { dbx, db, sbat_level }))
}

/// Read one efivarfs file without its 4 attribute bytes: `Ok(None)` when it does not exist. Never through a
/// symbolic link, only a regular file, never more than MAX_VARIABLE_BYTES (efivarfs may say size 0 in stat, so
/// the size is what reading gives).
fn read_variable(dir: &Path, file: &str) -> Result<Option<Vec<u8>>, RevocationError> {
    use std::os::unix::fs::OpenOptionsExt;
    let variable = || file.split('-').next().unwrap_or(file).to_string();
    let read_err = |source| RevocationError::Read { variable: variable(), source };
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(dir.join(file))
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(RevocationError::NotAFile { variable: variable() });
        }
        Err(e) => return Err(read_err(e)),
    };
    if !f.metadata().map_err(read_err)?.is_file() {
        return Err(RevocationError::NotAFile { variable: variable() });
    }
    let data = crate::sys::argfile::read_capped(f, MAX_VARIABLE_BYTES + 4)
        .map_err(read_err)?
        .ok_or_else(|| RevocationError::TooBig { variable: variable() })?;
    if data.len() < 4 {
        let what = format!("{} bytes, fewer than its 4 attribute bytes", data.len());
        return Err(RevocationError::Malformed { variable: variable(), what });
    }
    Ok(Some(data[4..].to_vec()))
}

/// Parse a db or dbx (the variable's data after its attributes): EFI_SIGNATURE_LISTs one after the other.
/// `variable` names it in errors. Every size is checked against what is left; each list takes at least 28
/// bytes and each entry at least 17, so the loops are bounded by the data.
pub fn parse_signature_lists(variable: &str, mut data: &[u8]) -> Result<SignatureDb, RevocationError> {
    let bad = |what: String| RevocationError::Malformed { variable: variable.to_string(), what };
    let u32_at = |d: &[u8], o: usize| u32::from_le_bytes([d[o], d[o + 1], d[o + 2], d[o + 3]]) as usize;
    let mut db = SignatureDb::default();
    let mut index = 0usize;
    while !data.is_empty() {
        if data.len() < LIST_HEADER {
            return Err(bad(format!(
                "signature list {index} is cut off ({} bytes left of a 28-byte header)",
                data.len()
            )));
        }
        let (list_size, header_size, sig_size) = (u32_at(data, 16), u32_at(data, 20), u32_at(data, 24));
        if list_size > data.len() {
            return Err(bad(format!("signature list {index} says {list_size} bytes, only {} are left", data.len())));
        }
        let Some(body) = list_size.checked_sub(LIST_HEADER).and_then(|b| b.checked_sub(header_size)) else {
            return Err(bad(format!(
                "signature list {index} is {list_size} bytes, too small for its headers (28 + {header_size})"
            )));
        };
        if sig_size <= OWNER || body % sig_size != 0 {
            return Err(bad(format!(
                "signature list {index} has entries of {sig_size} bytes in {body} bytes (an entry is a 16-byte \
                 owner and its data, and the list holds whole entries)"
            )));
        }
        let kind: [u8; 16] = data[..16].try_into().unwrap_or_default();
        let fixed = |want: usize| {
            if sig_size == OWNER + want {
                Ok(())
            } else {
                Err(bad(format!("signature list {index} holds {sig_size}-byte entries, not {}", OWNER + want)))
            }
        };
        let entries = data[LIST_HEADER + header_size..list_size].chunks_exact(sig_size).map(|e| &e[OWNER..]);
        match kind {
            CERT_SHA256 => {
                fixed(32)?;
                db.sha256.extend(entries.map(|e| <[u8; 32]>::try_from(e).unwrap_or_default()));
            }
            CERT_X509_SHA256 => {
                // The hash, then an EFI_TIME of revocation (16 bytes).
                fixed(48)?;
                db.x509_sha256.extend(entries.map(|e| <[u8; 32]>::try_from(&e[..32]).unwrap_or_default()));
            }
            CERT_X509 => db.x509.extend(entries.map(<[u8]>::to_vec)),
            _ => db.skipped += body / sig_size,
        }
        data = &data[list_size..];
        index += 1;
    }
    Ok(db)
}

/// SBAT text (a loader's `.sbat` section or an SbatLevel variable): CSV lines `component,generation,…`, up to
/// the first NUL, at most MAX_SBAT_BYTES and MAX_SBAT_ENTRIES; lines whose generation is not a number are left
/// out.
pub fn parse_sbat(data: &[u8]) -> Vec<SbatEntry> {
    let data = &data[..data.len().min(MAX_SBAT_BYTES)];
    let data = data.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(data)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(',');
            let component = fields.next()?.trim();
            let generation = fields.next()?.trim().parse().ok()?;
            (!component.is_empty()).then(|| SbatEntry { component: component.to_string(), generation })
        })
        .take(MAX_SBAT_ENTRIES)
        .collect()
}

/// A certificate from a loader's signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderCert {
    /// The certificate as the signature carries it (DER).
    pub der: Vec<u8>,
    /// Subject and issuer as RFC 4514 strings ("CN=…,O=…"), or a note when x509-cert cannot read them.
    pub subject: String,
    pub issuer: String,
    /// SHA-256 of its TBSCertificate (what an EFI_CERT_X509_SHA256 entry lists).
    pub tbs_sha256: [u8; 32],
}

/// What the revocation check needs to know of one loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderFacts {
    /// The Authenticode SHA-256 of the image (what dbx and db list for an image).
    pub sha256: [u8; 32],
    /// The digests the signatures say they sign (to compare with `sha256`).
    pub signed_digests: Vec<Vec<u8>>,
    /// The certificates of all its signatures (a loader may carry several WIN_CERTIFICATEs).
    pub certs: Vec<LoaderCert>,
    /// Signatures woesafe could not read, each said in a few words.
    pub unreadable_signatures: Vec<String>,
    /// Its `.sbat` entries; None when it has no `.sbat` section (Windows' loaders have none).
    pub sbat: Option<Vec<SbatEntry>>,
}

/// The Authenticode SHA-256, the signatures' certificates and the `.sbat` of a PE image (PE32+ or PE32, at most
/// MAX_LOADER_BYTES). An unsigned image has no certificates; a signature that cannot be read is noted in
/// `unreadable_signatures` (the hash is still checked).
pub fn examine(pe: &[u8]) -> Result<LoaderFacts, RevocationError> {
    use object::read::pe::{PeFile32, PeFile64};
    if pe.len() as u64 > MAX_LOADER_BYTES {
        return Err(RevocationError::BadPe { what: format!("bigger than a UEFI loader ({MAX_LOADER_BYTES} bytes)") });
    }
    match PeFile64::parse(pe) {
        Ok(file) => examine_file(&file),
        Err(e64) => match PeFile32::parse(pe) {
            Ok(file) => examine_file(&file),
            Err(_) => Err(RevocationError::BadPe { what: e64.to_string() }),
        },
    }
}

/// Feeds the authenticode crate's digest::Update (digest 0.10) into sha2's SHA-256 (digest 0.11).
struct Feed(Sha256);

impl digest::Update for Feed {
    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }
}

fn examine_file<I: object::read::pe::ImageNtHeaders>(
    file: &object::read::pe::PeFile<'_, I>,
) -> Result<LoaderFacts, RevocationError> {
    use authenticode::PeTrait;
    let bad = |what: &str| RevocationError::BadPe { what: what.to_string() };
    // The hash reads the headers, every section and what follows once each: sections that overlap or go past
    // the end would make it read (up to 65,535 times) more than the file, so they are refused first.
    let data = file.data();
    let offsets = file.offsets().map_err(|_| bad("its headers' offsets are out of range"))?;
    let mut hashed = offsets.after_header;
    for i in 1..=file.num_sections() {
        let range = file.section_data_range(i).map_err(|_| bad("a section's offset overflows"))?;
        hashed = hashed.checked_add(range.len()).ok_or_else(|| bad("its sections overflow"))?;
    }
    if hashed > data.len() {
        return Err(bad("its headers and sections add up to more than the file (they overlap or are cut off)"));
    }
    let mut feed = Feed(Sha256::new());
    authenticode::authenticode_digest(file, &mut feed)
        .map_err(|_| bad("the Authenticode hash's ranges are out of the file (headers, sections or certificates)"))?;
    let sha256: [u8; 32] = feed.0.finalize().into();

    let mut facts =
        LoaderFacts { sha256, signed_digests: vec![], certs: vec![], unreadable_signatures: vec![], sbat: None };
    match authenticode::AttributeCertificateIterator::new(file) {
        Ok(None) => {}
        Err(e) => facts.unreadable_signatures.push(e.to_string()),
        Ok(Some(entries)) => {
            for (i, entry) in entries.enumerate() {
                if i == MAX_SIGNATURES {
                    facts.unreadable_signatures.push(format!("more than {MAX_SIGNATURES} signatures: the rest"));
                    break;
                }
                let entry = match entry {
                    Ok(entry) => entry,
                    Err(e) => {
                        facts.unreadable_signatures.push(e.to_string());
                        break;
                    }
                };
                // The certificates are read even when the authenticode crate refuses the signature (its checks
                // are stricter than what finding them needs); one note per signature.
                let certs = signed_data_certs(entry.data);
                for der in certs.iter().flatten() {
                    if facts.certs.len() < MAX_LOADER_CERTS && !facts.certs.iter().any(|c| c.der == *der) {
                        facts.certs.push(loader_cert(der));
                    }
                }
                if !der_fits(entry.data) {
                    let what = "an element's length goes past what holds it (or nests deeper than woesafe reads)";
                    facts.unreadable_signatures.push(format!("signature {}: {what}", i + 1));
                    continue;
                }
                match (entry.get_authenticode_signature(), certs) {
                    (Ok(sig), Some(_)) => facts.signed_digests.push(sig.digest().to_vec()),
                    (Ok(sig), None) => {
                        facts.signed_digests.push(sig.digest().to_vec());
                        facts
                            .unreadable_signatures
                            .push(format!("signature {}: its certificates cannot be read", i + 1));
                    }
                    (Err(e), _) => facts.unreadable_signatures.push(format!("signature {}: {e}", i + 1)),
                }
            }
        }
    }

    use object::{Object as _, ObjectSection as _};
    if let Some(section) = file.section_by_name(".sbat") {
        // The raw data (never more than the file holds), not the virtual size's zero-filled rest.
        let raw = section.data().map_err(|_| bad("its .sbat section is out of the file"))?;
        facts.sbat = Some(parse_sbat(raw));
    }
    Ok(facts)
}

fn loader_cert(der: &[u8]) -> LoaderCert {
    use der::Decode as _;
    let tbs = der_element(der).and_then(|(_, content, _)| der_element(content)).map(|(_, _, whole)| whole);
    let tbs_sha256 = Sha256::digest(tbs.unwrap_or_default()).into();
    let cert = der_fits(der).then(|| x509_cert::Certificate::from_der(der));
    let (subject, issuer) = match cert {
        Some(Ok(c)) => (c.tbs_certificate.subject.to_string(), c.tbs_certificate.issuer.to_string()),
        _ => ("(a certificate woesafe cannot read)".to_string(), String::new()),
    };
    LoaderCert { der: der.to_vec(), subject, issuer, tbs_sha256 }
}

/// One DER element at the start of `data`: (tag, content, the whole element). Only what PKCS#7 and X.509 use:
/// one-byte tags, definite lengths of at most 4 length bytes.
fn der_element(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || tag & 0x1f == 0x1f {
            return None;
        }
        let bytes = data.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), 2 + n)
    };
    let end = header.checked_add(len)?;
    Some((tag, data.get(header..end)?, data.get(..end)?))
}

/// How deeply nested elements [`der_fits`] follows, the outermost counted as one (a signature with its
/// certificates and a timestamp's nests about 30 deep).
const MAX_DER_DEPTH: usize = 64;

/// Whether the DER element at the start of `data`, and every element inside it (through constructed ones, at
/// most MAX_DER_DEPTH deep), fits in what holds it. The der crate (0.7, under x509-cert and the authenticode
/// crate) allocates the length an element declares before it checks that the bytes are there: unchecked, a
/// 4 KiB signature or certificate declaring 256 MiB makes woesafe allocate 256 MiB. Trailing bytes after the
/// first element are not looked at (a WIN_CERTIFICATE is padded to 8 bytes; the decoders ignore them too).
fn der_fits(data: &[u8]) -> bool {
    let Some((_, _, first)) = der_element(data) else { return false };
    // Depth first, each entry the rest of one level: the stack stays short (MAX_DER_DEPTH + 1) whatever the data.
    let mut levels = vec![first];
    while let Some(level) = levels.last_mut() {
        if level.is_empty() {
            levels.pop();
            continue;
        }
        let Some((tag, content, whole)) = der_element(level) else { return false };
        *level = &level[whole.len()..];
        if tag & 0x1f == 0x1f {
            // A multi-byte tag, which der_element does not read (neither PKCS#7 nor X.509 uses them).
            return false;
        }
        if tag & 0x20 != 0 {
            if levels.len() > MAX_DER_DEPTH {
                return false;
            }
            levels.push(content);
        }
    }
    true
}

/// The DER certificates of a PKCS#7 ContentInfo holding SignedData: `certificates [0] IMPLICIT` after version,
/// digestAlgorithms and encapContentInfo. None when the structure is not that; Some(empty) when it has none.
fn signed_data_certs(data: &[u8]) -> Option<Vec<&[u8]>> {
    const SIGNED_DATA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];
    let (0x30, content_info, _) = der_element(data)? else { return None };
    let (0x06, oid, whole) = der_element(content_info)? else { return None };
    if oid != SIGNED_DATA_OID {
        return None;
    }
    let (0xa0, explicit, _) = der_element(&content_info[whole.len()..])? else { return None };
    let (0x30, mut signed_data, _) = der_element(explicit)? else { return None };
    for want in [0x02, 0x31, 0x30] {
        let (tag, _, whole) = der_element(signed_data)?;
        if tag != want {
            return None;
        }
        signed_data = &signed_data[whole.len()..];
    }
    let mut certs = vec![];
    let Some((0xa0, mut set, _)) = der_element(signed_data) else { return Some(certs) };
    while !set.is_empty() {
        let (tag, _, whole) = der_element(set)?;
        // Other CertificateChoices (attribute certificates, [1]…[3]) are skipped.
        if tag == 0x30 && certs.len() < MAX_LOADER_CERTS {
            certs.push(whole);
        }
        set = &set[whole.len()..];
    }
    Some(certs)
}

/// What the check found for one loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Its Authenticode hash is in dbx.
    HashRevoked { file: String, sha256: [u8; 32] },
    /// A certificate of its signature is in dbx (as a certificate or as its TBSCertificate's hash).
    CertRevoked { file: String, subject: String },
    /// Its SBAT next to this PC's SbatLevel; `below` lists (component, loader's generation, level's) that
    /// shim refuses.
    Sbat {
        file: String,
        variable: String,
        loader: Vec<SbatEntry>,
        level: Vec<SbatEntry>,
        below: Vec<(String, u32, u32)>,
    },
    /// Information, with a db only: the db certificate that issued a certificate of its signature, or None
    /// when none did (and its hash is not in db either).
    DbIssuer { file: String, issuer: Option<String> },
}

impl Finding {
    /// Whether the stick will not boot on this PC with Secure Boot on (else the finding is information).
    pub fn is_warning(&self) -> bool {
        match self {
            Finding::HashRevoked { .. } | Finding::CertRevoked { .. } => true,
            Finding::Sbat { below, .. } => !below.is_empty(),
            Finding::DbIssuer { .. } => false,
        }
    }
}

fn sbat_list(entries: &[SbatEntry]) -> String {
    if entries.is_empty() {
        return "(none)".into();
    }
    entries.iter().map(|e| format!("{},{}", e.component, e.generation)).collect::<Vec<_>>().join(" ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::HashRevoked { file, sha256 } => write!(
                f,
                "{file}: its Authenticode SHA-256 {} is in this PC's forbidden-signature database (dbx): {WONT_BOOT}",
                hex(sha256)
            ),
            Finding::CertRevoked { file, subject } => write!(
                f,
                "{file}: it is signed with the certificate \"{subject}\", which this PC's forbidden-signature \
                 database (dbx) lists: {WONT_BOOT}"
            ),
            Finding::Sbat { file, variable, loader, level, below } => {
                write!(f, "{file}: SBAT {}; this PC's {variable}: {}", sbat_list(loader), sbat_list(level))?;
                if below.is_empty() {
                    return Ok(());
                }
                let below: Vec<String> =
                    below.iter().map(|(c, have, need)| format!("{c} generation {have} is below {need}")).collect();
                write!(f, "; {} (shim refuses it): {WONT_BOOT}", below.join(", "))
            }
            Finding::DbIssuer { file, issuer: Some(issuer) } => {
                write!(f, "{file}: its signature chains to \"{issuer}\" in this PC's db")
            }
            Finding::DbIssuer { file, issuer: None } => write!(
                f,
                "{file}: no certificate in this PC's db issued its signature's certificates (its firmware may not \
                 accept it with Secure Boot on)"
            ),
        }
    }
}

/// Check one loader (`name`: how the user knows the file) against this PC's databases. Pure.
pub fn check(name: &str, loader: &LoaderFacts, fw: &Firmware) -> Vec<Finding> {
    let file = || name.to_string();
    let mut findings = vec![];
    if fw.dbx.sha256.contains(&loader.sha256) {
        findings.push(Finding::HashRevoked { file: file(), sha256: loader.sha256 });
    }
    // A certificate of any of its signatures in dbx (firmware refuses an image when one signature is forbidden,
    // whatever the others), or a dbx certificate that issued one of them (the firmware's chain to it is
    // forbidden: told by name, as woesafe does not verify signatures).
    for cert in &loader.certs {
        if fw.dbx.x509.contains(&cert.der) || fw.dbx.x509_sha256.contains(&cert.tbs_sha256) {
            findings.push(Finding::CertRevoked { file: file(), subject: cert.subject.clone() });
        }
    }
    for der in &fw.dbx.x509 {
        let subject = loader_cert(der).subject;
        // An unreadable name is "" on either side: never a match.
        if !subject.is_empty()
            && loader.certs.iter().any(|c| c.issuer == subject && c.der != *der)
            && !findings.iter().any(|f| matches!(f, Finding::CertRevoked { subject: s, .. } if *s == subject))
        {
            findings.push(Finding::CertRevoked { file: file(), subject });
        }
    }
    if let (Some(sbat), Some((variable, level))) = (&loader.sbat, &fw.sbat_level) {
        // shim's rule: an entry of the loader whose component the level names with a higher generation.
        let below = sbat
            .iter()
            .filter_map(|e| {
                let need = level.iter().filter(|l| l.component == e.component).map(|l| l.generation).max()?;
                (e.generation < need).then(|| (e.component.clone(), e.generation, need))
            })
            .collect();
        findings.push(Finding::Sbat {
            file: file(),
            variable: variable.clone(),
            loader: sbat.clone(),
            level: level.clone(),
            below,
        });
    }
    if let Some(db) = &fw.db
        && !loader.certs.is_empty()
        && !db.sha256.contains(&loader.sha256)
    {
        let issuer = db.x509.iter().find_map(|der| {
            let subject = loader_cert(der).subject;
            loader
                .certs
                .iter()
                .any(|c| (!subject.is_empty() && c.issuer == subject) || c.der == *der)
                .then_some(subject)
        });
        findings.push(Finding::DbIssuer { file: file(), issuer });
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ x86_64 EFI application: headers (0x200 bytes), .text at 0x200 and .sbat at 0x400 (0x200
    /// bytes each), no signature.
    pub(super) fn fixture_pe(sbat: &str) -> Vec<u8> {
        let mut pe = vec![0u8; 0x600];
        let put = |pe: &mut Vec<u8>, at: usize, bytes: &[u8]| pe[at..at + bytes.len()].copy_from_slice(bytes);
        put(&mut pe, 0, b"MZ");
        put(&mut pe, 0x3C, &0x80u32.to_le_bytes());
        put(&mut pe, 0x80, b"PE\0\0");
        put(&mut pe, 0x84, &0x8664u16.to_le_bytes());
        put(&mut pe, 0x86, &2u16.to_le_bytes()); // sections
        put(&mut pe, 0x94, &240u16.to_le_bytes()); // optional header size
        put(&mut pe, 0x96, &0x0206u16.to_le_bytes());
        let opt = 0x98;
        put(&mut pe, opt, &0x20bu16.to_le_bytes());
        put(&mut pe, opt + 4, &0x200u32.to_le_bytes()); // SizeOfCode
        put(&mut pe, opt + 16, &0x1000u32.to_le_bytes()); // AddressOfEntryPoint
        put(&mut pe, opt + 20, &0x1000u32.to_le_bytes()); // BaseOfCode
        put(&mut pe, opt + 32, &0x1000u32.to_le_bytes()); // SectionAlignment
        put(&mut pe, opt + 36, &0x200u32.to_le_bytes()); // FileAlignment
        put(&mut pe, opt + 56, &0x3000u32.to_le_bytes()); // SizeOfImage
        put(&mut pe, opt + 60, &0x200u32.to_le_bytes()); // SizeOfHeaders
        put(&mut pe, opt + 64, &0x1234_5678u32.to_le_bytes()); // CheckSum: not hashed
        put(&mut pe, opt + 68, &10u16.to_le_bytes()); // EFI application
        put(&mut pe, opt + 108, &16u32.to_le_bytes()); // NumberOfRvaAndSizes
        let sections = opt + 240;
        for (i, (name, chars)) in [(b".text\0\0\0", 0x6000_0020u32), (b".sbat\0\0\0", 0x4000_0040)].iter().enumerate() {
            let s = sections + 40 * i;
            put(&mut pe, s, *name);
            put(&mut pe, s + 8, &0x200u32.to_le_bytes()); // VirtualSize
            put(&mut pe, s + 12, &(0x1000 * (i as u32 + 1)).to_le_bytes()); // VirtualAddress
            put(&mut pe, s + 16, &0x200u32.to_le_bytes()); // SizeOfRawData
            put(&mut pe, s + 20, &(0x200 * (i as u32 + 1)).to_le_bytes()); // PointerToRawData
            put(&mut pe, s + 36, &chars.to_le_bytes());
        }
        put(&mut pe, 0x200, &[0x48, 0x31, 0xc0, 0xc3]); // xor rax, rax; ret
        let sbat = &sbat.as_bytes()[..sbat.len().min(0x200)];
        put(&mut pe, 0x400, sbat);
        pe
    }

    pub(super) const FIXTURE_SBAT: &str = "sbat,1,SBAT Version,sbat,1,https://github.com/rhboot/shim/blob/main/SBAT.md\n\
        shim,3,UEFI shim,shim,1,https://github.com/rhboot/shim\n\
        grub,2,Free Software Foundation,grub,2.06,https://www.gnu.org/software/grub/\n";

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/revocation").join(name)).unwrap()
    }

    fn unhex(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// The signed fixture's Authenticode SHA-256 as osslsigncode 2.9 calculated it when it signed the file.
    const SIGNED_SHA256: &str = "7ab9e9b16b5ffb11f0641f0048cd4083f360b038737e2ebc9e622db568f34959";
    /// SHA-256 of the fixture certificates' TBSCertificate, cut out with openssl asn1parse and dd.
    const SIGNER_TBS_SHA256: &str = "d535968e15df41c3d93120dc9bad19865049ba469e16f4e3060de3e913b803b1";
    const CA_TBS_SHA256: &str = "6ecdde9ae0cfef90fbb477ffc00a10b9f15cd45f5348a6aa522209a127b7c81e";
    const SIGNER: &str = "CN=woesafe test signer";
    const CA: &str = "CN=woesafe test CA,O=woesafe tests";

    /// An EFI_SIGNATURE_LIST of `kind` holding `entries` (each after a 16-byte owner GUID).
    fn esl(kind: [u8; 16], entries: &[&[u8]]) -> Vec<u8> {
        let size = OWNER + entries.first().map_or(32, |e| e.len());
        let mut l = kind.to_vec();
        l.extend(((LIST_HEADER + size * entries.len()) as u32).to_le_bytes());
        l.extend(0u32.to_le_bytes());
        l.extend((size as u32).to_le_bytes());
        for e in entries {
            l.extend([0x77; OWNER]);
            l.extend(*e);
        }
        l
    }

    /// An efivars-like directory: each variable (name without GUID, data) written with 4 attribute bytes.
    fn efivars(vars: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, data) in vars {
            let guid = if name.starts_with("Sbat") { SHIM_LOCK_GUID } else { SECURITY_DATABASE_GUID };
            let mut bytes = vec![0x27, 0, 0, 0];
            bytes.extend(*data);
            std::fs::write(dir.path().join(format!("{name}-{guid}")), bytes).unwrap();
        }
        dir
    }

    fn firmware(vars: &[(&str, &[u8])]) -> Firmware {
        load(efivars(vars).path()).unwrap().unwrap()
    }

    const NAME: &str = "efi/boot/bootx64.efi";

    #[test]
    fn the_signed_fixture_is_examined() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        assert_eq!(hex(&facts.sha256), SIGNED_SHA256);
        assert_eq!(facts.signed_digests, vec![facts.sha256.to_vec()]);
        assert!(facts.unreadable_signatures.is_empty(), "{:?}", facts.unreadable_signatures);
        let names: Vec<(&str, &str)> = facts.certs.iter().map(|c| (&*c.subject, &*c.issuer)).collect();
        assert_eq!(names, [(SIGNER, CA), (CA, CA)]);
        assert_eq!(facts.certs[0].der, fixture("signer.der"));
        assert_eq!(facts.certs[1].der, fixture("ca.der"));
        assert_eq!(hex(&facts.certs[0].tbs_sha256), SIGNER_TBS_SHA256);
        assert_eq!(hex(&facts.certs[1].tbs_sha256), CA_TBS_SHA256);
        let sbat = facts.sbat.unwrap();
        let sbat: Vec<(&str, u32)> = sbat.iter().map(|e| (&*e.component, e.generation)).collect();
        assert_eq!(sbat, [("sbat", 1), ("shim", 3), ("grub", 2)]);
        // Signing changes neither the hash (checksum, certificate table entry and table are left out) nor the rest.
        let unsigned = examine(&fixture_pe(FIXTURE_SBAT)).unwrap();
        assert_eq!(unsigned.sha256, facts.sha256);
        assert!(
            unsigned.certs.is_empty()
                && unsigned.signed_digests.is_empty()
                && unsigned.unreadable_signatures.is_empty()
        );
    }

    /// The hash against osslsigncode's, computed now (when it is installed) for the signed fixture and for an
    /// unsigned loader with trailing data after its last section.
    #[test]
    fn authenticode_hash_matches_osslsigncode() {
        let calculated = |path: &Path| -> Option<String> {
            let out = std::process::Command::new("osslsigncode").arg("verify").arg("-in").arg(path).output().ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let line = text.lines().find(|l| l.starts_with("Calculated message digest"))?;
            Some(line.split(':').nth(1)?.trim().to_ascii_lowercase())
        };
        let dir = tempfile::tempdir().unwrap();
        let signed = dir.path().join("signed.efi");
        std::fs::write(&signed, fixture("signed.efi")).unwrap();
        if std::process::Command::new("osslsigncode").arg("--version").output().is_err() {
            crate::report_skip("authenticode_hash_matches_osslsigncode", "osslsigncode is not installed");
            return;
        }
        assert_eq!(calculated(&signed).as_deref(), Some(SIGNED_SHA256));
        // Sign a loader with data after its sections with a key made now; compare again.
        let mut pe = fixture_pe("sbat,1,x\n");
        pe.extend(b"trailing data after the last section, hashed too\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let (unsigned, key, cert, out) =
            (dir.path().join("u.efi"), dir.path().join("k.pem"), dir.path().join("c.pem"), dir.path().join("s.efi"));
        std::fs::write(&unsigned, &pe).unwrap();
        let ok = |cmd: &mut std::process::Command| cmd.output().is_ok_and(|o| o.status.success());
        assert!(ok(std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t", "-days", "2", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)));
        assert!(ok(std::process::Command::new("osslsigncode")
            .args(["sign", "-h", "sha256", "-certs"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .arg("-in")
            .arg(&unsigned)
            .arg("-out")
            .arg(&out)));
        let facts = examine(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(Some(hex(&facts.sha256)), calculated(&out));
        assert_eq!(facts.sha256, examine(&pe).unwrap().sha256);
        assert_eq!(facts.certs.len(), 1);
        assert_eq!(facts.certs[0].subject, "CN=t");
    }

    #[test]
    fn a_dbx_listing_the_loader_hash_revokes_it() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        let other = [0x11u8; 32];
        let dbx = esl(CERT_SHA256, &[&other, &facts.sha256]);
        let findings = check(NAME, &facts, &firmware(&[("dbx", &dbx)]));
        assert_eq!(findings, [Finding::HashRevoked { file: NAME.into(), sha256: facts.sha256 }]);
        assert!(findings[0].is_warning());
        assert_eq!(
            findings[0].to_string(),
            format!(
                "efi/boot/bootx64.efi: its Authenticode SHA-256 {SIGNED_SHA256} is in this PC's forbidden-signature \
                 database (dbx): this stick will not boot on this PC with Secure Boot on; try --ca2023"
            )
        );
    }

    #[test]
    fn a_dbx_listing_other_hashes_and_certificates_finds_nothing() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        let mut dbx = esl(CERT_SHA256, &[&[0x11; 32], &[0x22; 32]]);
        dbx.extend(esl(CERT_X509_SHA256, &[&[0x33; 48]]));
        dbx.extend(esl(CERT_X509, &[b"not the signer's certificate"]));
        // an entry type woesafe does not compare (EFI_CERT_SHA1_GUID) is skipped
        let sha1 = guid(0x826ca512, 0xcf10, 0x4ac9, [0xb1, 0x87, 0xbe, 0x01, 0x49, 0x66, 0x31, 0xbd]);
        dbx.extend(esl(sha1, &[&[0x44; 20], &[0x55; 20]]));
        let fw = firmware(&[("dbx", &dbx)]);
        assert_eq!((fw.dbx.sha256.len(), fw.dbx.x509_sha256.len(), fw.dbx.x509.len(), fw.dbx.skipped), (2, 1, 1, 2));
        assert_eq!(fw.db, None);
        assert_eq!(fw.sbat_level, None);
        assert_eq!(check(NAME, &facts, &fw), []);
        // an empty dbx (attributes only) is a dbx with nothing in it
        assert_eq!(check(NAME, &facts, &firmware(&[("dbx", &[])])), []);
    }

    #[test]
    fn a_dbx_listing_a_signing_certificate_revokes_the_loader() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        let revoked = |subject: &str| Finding::CertRevoked { file: NAME.into(), subject: subject.into() };
        let dbx = esl(CERT_X509, &[&fixture("signer.der")]);
        let findings = check(NAME, &facts, &firmware(&[("dbx", &dbx)]));
        assert_eq!(findings, [revoked(SIGNER)]);
        assert!(findings[0].is_warning());
        let text = findings[0].to_string();
        assert!(text.starts_with("efi/boot/bootx64.efi: it is signed with the certificate \"CN=woesafe test signer\""));
        assert!(text.ends_with(WONT_BOOT), "{text}");
        // the CA's TBSCertificate hash (EFI_CERT_X509_SHA256: the hash and a 16-byte time of revocation)
        let mut entry = unhex(CA_TBS_SHA256).to_vec();
        entry.extend([0u8; 16]);
        let dbx = esl(CERT_X509_SHA256, &[&entry]);
        assert_eq!(check(NAME, &facts, &firmware(&[("dbx", &dbx)])), [revoked(CA)]);
        // the CA in dbx: once, whether the signature carries it or only names it as the signer's issuer
        let dbx = esl(CERT_X509, &[&fixture("ca.der")]);
        assert_eq!(check(NAME, &facts, &firmware(&[("dbx", &dbx)])), [revoked(CA)]);
        let mut without_ca = facts.clone();
        without_ca.certs.truncate(1);
        assert_eq!(check(NAME, &without_ca, &firmware(&[("dbx", &dbx)])), [revoked(CA)]);
        // a dbx certificate that issued nothing of the loader's
        let dbx = esl(CERT_X509, &[b"unreadable"]);
        assert_eq!(check(NAME, &without_ca, &firmware(&[("dbx", &dbx)])), []);
    }

    #[test]
    fn no_efivars_or_no_dbx_is_no_check() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(&dir.path().join("missing")).unwrap(), None);
        assert_eq!(load(dir.path()).unwrap(), None);
        // a db and an SbatLevel without a dbx: still nothing to check against
        let db = esl(CERT_X509, &[&fixture("ca.der")]);
        assert_eq!(load(efivars(&[("db", &db), ("SbatLevelRT", b"sbat,1,2023012900\n")]).path()).unwrap(), None);
        // a file in the place of the directory
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(load(&file).unwrap(), None);
        if std::env::var_os("WOESAFE_TEST_EFIVARS").is_none() {
            assert_eq!(efivars_dir(), Path::new(EFIVARS));
        }
    }

    #[test]
    fn malformed_variables_are_typed_errors() {
        let malformed = |vars: &[(&str, &[u8])], variable: &str, what: &str| {
            let err = load(efivars(vars).path()).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, RevocationError::Malformed { variable: v, .. } if v == variable) && text.contains(what),
                "{text}"
            );
        };
        let good = esl(CERT_SHA256, &[&[1; 32]]);
        let mut cut = good.clone();
        cut.pop();
        malformed(&[("dbx", &cut)], "dbx", "says 76 bytes, only 75 are left");
        malformed(&[("dbx", &good[..20])], "dbx", "cut off (20 bytes left of a 28-byte header)");
        let mut small = good.clone();
        small[16..20].copy_from_slice(&20u32.to_le_bytes());
        malformed(&[("dbx", &small)], "dbx", "too small for its headers");
        let mut header = good.clone();
        header[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        malformed(&[("dbx", &header)], "dbx", "too small for its headers (28 + 4294967295)");
        for size in [0u32, 16, 47, u32::MAX] {
            let mut sig = good.clone();
            sig[24..28].copy_from_slice(&size.to_le_bytes());
            malformed(&[("dbx", &sig)], "dbx", "entries of");
        }
        // whole entries, but not of a SHA-256's size
        let odd = esl(CERT_SHA256, &[&[1; 20]]);
        malformed(&[("dbx", &odd)], "dbx", "holds 36-byte entries, not 48");
        malformed(&[("dbx", &good), ("db", &cut)], "db", "only 75 are left");
        // a variable shorter than its attributes
        let dir = efivars(&[]);
        std::fs::write(dir.path().join(format!("dbx-{SECURITY_DATABASE_GUID}")), [7u8, 0]).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("dbx is malformed: 2 bytes, fewer than its 4 attribute bytes"), "{err}");
        // too big, a symbolic link (to a file, to a device that never ends), a directory
        let dbx = dir.path().join(format!("dbx-{SECURITY_DATABASE_GUID}"));
        std::fs::File::create(&dbx).unwrap().set_len(MAX_VARIABLE_BYTES + 5).unwrap();
        assert!(matches!(load(dir.path()), Err(RevocationError::TooBig { variable }) if variable == "dbx"));
        std::fs::File::create(&dbx).unwrap().set_len(MAX_VARIABLE_BYTES + 4).unwrap();
        assert!(matches!(load(dir.path()), Err(RevocationError::Malformed { .. })), "read whole, then parsed");
        std::fs::remove_file(&dbx).unwrap();
        let real = dir.path().join("real");
        let mut bytes = vec![0x27, 0, 0, 0];
        bytes.extend(&good);
        std::fs::write(&real, bytes).unwrap();
        for target in [real.as_path(), Path::new("/dev/zero")] {
            let _ = std::fs::remove_file(&dbx);
            std::os::unix::fs::symlink(target, &dbx).unwrap();
            assert!(matches!(load(dir.path()), Err(RevocationError::NotAFile { variable }) if variable == "dbx"));
        }
        std::fs::remove_file(&dbx).unwrap();
        std::fs::create_dir(&dbx).unwrap();
        let err = load(dir.path()).unwrap_err();
        assert!(matches!(err, RevocationError::NotAFile { .. } | RevocationError::Read { .. }), "{err}");
    }

    #[test]
    fn sbat_is_shown_next_to_the_sbat_level() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        let entry = |c: &str, g| SbatEntry { component: c.into(), generation: g };
        let dbx = esl(CERT_SHA256, &[&[0x11; 32]]);
        // shim's SbatLevel of 2023: grub below generation 3 is revoked
        let fw = firmware(&[("dbx", &dbx), ("SbatLevelRT", b"sbat,1,2023012900\nshim,2\ngrub,3\ngrub.debian,4\n\0")]);
        let findings = check(NAME, &facts, &fw);
        assert_eq!(findings.len(), 1);
        let Finding::Sbat { variable, loader, level, below, .. } = &findings[0] else { panic!("{findings:?}") };
        assert_eq!(variable, "SbatLevelRT");
        assert_eq!(loader, &[entry("sbat", 1), entry("shim", 3), entry("grub", 2)]);
        assert_eq!(level, &[entry("sbat", 1), entry("shim", 2), entry("grub", 3), entry("grub.debian", 4)]);
        assert_eq!(below, &[("grub".to_string(), 2, 3)]);
        assert!(findings[0].is_warning());
        assert_eq!(
            findings[0].to_string(),
            "efi/boot/bootx64.efi: SBAT sbat,1 shim,3 grub,2; this PC's SbatLevelRT: sbat,1 shim,2 grub,3 \
             grub.debian,4; grub generation 2 is below 3 (shim refuses it): this stick will not boot on this PC with \
             Secure Boot on; try --ca2023"
        );
        // the original SbatLevel of 2021: nothing below, one line of information; SbatLevel when no SbatLevelRT
        // (or when SbatLevelRT cannot be read: a symbolic link here)
        let vars = efivars(&[("dbx", &dbx), ("SbatLevel", b"sbat,1,2021030218\n")]);
        std::os::unix::fs::symlink("/dev/zero", vars.path().join(format!("SbatLevelRT-{SHIM_LOCK_GUID}"))).unwrap();
        let fw = load(vars.path()).unwrap().unwrap();
        let findings = check(NAME, &facts, &fw);
        assert!(!findings[0].is_warning());
        assert_eq!(
            findings[0].to_string(),
            "efi/boot/bootx64.efi: SBAT sbat,1 shim,3 grub,2; this PC's SbatLevel: sbat,1"
        );
        // a loader without .sbat (Windows' bootmgfw.efi): no SBAT line
        let mut windows = facts.clone();
        windows.sbat = None;
        assert_eq!(check(NAME, &windows, &fw), []);
        // hostile text: no panic, bounded
        assert_eq!(
            parse_sbat(b"\xff\xfe,1\n,2\nx,\ny,-1\nz,99999999999\nok,7,\0after,1"),
            [entry("\u{fffd}\u{fffd}", 1), entry("ok", 7)]
        );
        assert_eq!(parse_sbat("a,1\n".repeat(100_000).as_bytes()).len(), MAX_SBAT_ENTRIES);
    }

    #[test]
    fn db_says_which_certificate_issued_the_loader() {
        let facts = examine(&fixture("signed.efi")).unwrap();
        let dbx = esl(CERT_SHA256, &[&[0x11; 32]]);
        let db = esl(CERT_X509, &[&fixture("ca.der")]);
        let findings = check(NAME, &facts, &firmware(&[("dbx", &dbx), ("db", &db)]));
        assert_eq!(findings, [Finding::DbIssuer { file: NAME.into(), issuer: Some(CA.into()) }]);
        assert!(!findings[0].is_warning());
        assert_eq!(findings[0].to_string(), format!("{NAME}: its signature chains to \"{CA}\" in this PC's db"));
        // a db of other certificates: information, not a warning
        let db = esl(CERT_X509, &[b"some other certificate"]);
        let findings = check(NAME, &facts, &firmware(&[("dbx", &dbx), ("db", &db)]));
        assert_eq!(findings, [Finding::DbIssuer { file: NAME.into(), issuer: None }]);
        assert!(!findings[0].is_warning());
        // the loader's own hash in db; an unsigned loader: nothing to say
        let db = esl(CERT_SHA256, &[&facts.sha256]);
        assert_eq!(check(NAME, &facts, &firmware(&[("dbx", &dbx), ("db", &db)])), []);
        let unsigned = examine(&fixture_pe(FIXTURE_SBAT)).unwrap();
        let db = esl(CERT_X509, &[&fixture("ca.der")]);
        assert_eq!(check(NAME, &LoaderFacts { sbat: None, ..unsigned }, &firmware(&[("dbx", &dbx), ("db", &db)])), []);
    }

    /// Debian's Microsoft-signed shim and Debian-signed GRUB (unpacked by scripts/install-deps): the hash equals
    /// the digest each of their signatures signed (Microsoft's and Debian's signing tools computed those).
    #[test]
    fn real_signed_shim_and_grub() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/efi-signed/usr/lib");
        let shim = dir.join("shim/shimx64.efi.signed");
        let grub = dir.join("grub/x86_64-efi-signed/grubx64.efi.signed");
        if !shim.exists() || !grub.exists() {
            crate::report_skip("real_signed_shim_and_grub", "no target/efi-signed: run scripts/install-deps");
            return;
        }
        for (path, component, signer) in [(shim, "shim", "Microsoft"), (grub, "grub", "Debian")] {
            let facts = examine(&std::fs::read(&path).unwrap()).unwrap();
            let sha256: Vec<_> = facts.signed_digests.iter().filter(|d| d.len() == 32).collect();
            assert!(!sha256.is_empty(), "{}: {facts:?}", path.display());
            assert!(sha256.iter().all(|d| **d == facts.sha256), "{}: {facts:?}", path.display());
            assert!(facts.certs.iter().any(|c| c.subject.contains(signer)), "{}: {:?}", path.display(), facts.certs);
            let sbat = facts.sbat.as_ref().unwrap();
            assert!(sbat.iter().any(|e| e.component == component), "{sbat:?}");
            assert_eq!(sbat[0].component, "sbat");
            let dbx = esl(CERT_SHA256, &[&facts.sha256]);
            assert!(check("x", &facts, &firmware(&[("dbx", &dbx)]))[0].is_warning());
        }
    }

    /// Truncated and corrupted loaders and signature lists, at every byte: an error or an answer, never a
    /// panic, and fast.
    #[test]
    fn hostile_bytes_never_panic() {
        let start = std::time::Instant::now();
        let signed = fixture("signed.efi");
        for len in 0..signed.len() {
            let _ = examine(&signed[..len]);
        }
        for at in 0..signed.len() {
            for value in [0x00, 0xff, signed[at] ^ 0x80, signed[at].wrapping_add(1)] {
                let mut pe = signed.clone();
                pe[at] = value;
                if let Ok(facts) = examine(&pe) {
                    let _ = check(NAME, &facts, &Firmware { dbx: SignatureDb::default(), db: None, sbat_level: None });
                }
            }
        }
        let mut lists = esl(CERT_SHA256, &[&[1; 32], &[2; 32]]);
        lists.extend(esl(CERT_X509, &[&fixture("ca.der")]));
        lists.extend(esl(CERT_X509_SHA256, &[&[3; 48]]));
        for len in 0..lists.len() {
            let _ = parse_signature_lists("dbx", &lists[..len]);
        }
        for at in 0..lists.len() {
            for value in [0x00, 0xff, 0x7f, 0x80, lists[at] ^ 0x01] {
                let mut l = lists.clone();
                l[at] = value;
                let _ = parse_signature_lists("dbx", &l);
            }
        }
        assert!(start.elapsed().as_secs() < 20, "{:?}", start.elapsed());
    }

    /// Sections that all point at the same 7 MiB: hashing them would read 7 MiB thousands of times.
    #[test]
    fn overlapping_sections_are_refused_before_hashing() {
        let mut pe = fixture_pe("");
        let sections: u16 = 2000;
        let table = 0x98 + 240;
        let headers = (table + 40 * usize::from(sections)).next_multiple_of(0x200);
        pe.resize(7 << 20, 0);
        pe[0x86..0x88].copy_from_slice(&sections.to_le_bytes());
        pe[0x98 + 60..0x98 + 64].copy_from_slice(&(headers as u32).to_le_bytes());
        for i in 0..usize::from(sections) {
            let s = table + 40 * i;
            pe[s..s + 8].copy_from_slice(b".data\0\0\0");
            pe[s + 12..s + 16].copy_from_slice(&(0x1000 * (i as u32 + 1)).to_le_bytes());
            pe[s + 16..s + 20].copy_from_slice(&((7 << 20) - headers as u32).to_le_bytes());
            pe[s + 20..s + 24].copy_from_slice(&(headers as u32).to_le_bytes());
        }
        let start = std::time::Instant::now();
        let err = examine(&pe).unwrap_err().to_string();
        assert!(err.contains("add up to more than the file"), "{err}");
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        // a certificate table of 100,000 empty signatures: a few looked at, quickly
        let mut pe = fixture_pe("");
        let table = pe.len();
        for _ in 0..100_000 {
            pe.extend(8u32.to_le_bytes());
            pe.extend(0x0200u16.to_le_bytes());
            pe.extend(2u16.to_le_bytes());
        }
        // the Certificate Table data directory (the fifth) holds the table's file offset and size
        pe[0x98 + 112 + 32..0x98 + 112 + 36].copy_from_slice(&(table as u32).to_le_bytes());
        pe[0x98 + 112 + 36..0x98 + 112 + 40].copy_from_slice(&800_000u32.to_le_bytes());
        let start = std::time::Instant::now();
        let facts = examine(&pe).unwrap();
        assert_eq!(facts.unreadable_signatures.len(), MAX_SIGNATURES + 1, "{:?}", facts.unreadable_signatures);
        assert!(facts.unreadable_signatures[MAX_SIGNATURES].starts_with("more than 16 signatures"));
        assert_eq!(facts.sha256, examine(&fixture_pe("")).unwrap().sha256, "the table is not hashed");
        assert!(start.elapsed().as_millis() < 500, "{:?}", start.elapsed());
        // and more than a loader is never looked at
        let err = examine(&vec![0u8; MAX_LOADER_BYTES as usize + 1]).unwrap_err().to_string();
        assert!(err.contains("bigger than a UEFI loader"), "{err}");
    }

    /// DER that declares more than it holds is never handed to the der crate, which would allocate the declared
    /// length first (256 MiB for a few bytes: found by the `loader` fuzz target, tests/fuzz-regressions/loader/).
    #[test]
    fn der_lengths_past_their_holder_are_never_decoded() {
        for der in [fixture("signer.der"), fixture("ca.der")] {
            assert!(der_fits(&der));
            let mut padded = der.clone();
            padded.extend([0; 3]);
            assert!(der_fits(&padded), "bytes after the element are not looked at");
            assert!(!der_fits(&der[..der.len() - 1]));
        }
        // a certificate whose signature algorithm's parameters declare 256 MiB
        let huge: &[u8] = b"\x30\x1d\x30\x1b\xa0\x03\x02\x01\x02\x02\x01\x01\x30\x11\x06\x09\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b\x05\x84\x0f\xff\xff\xff";
        assert!(!der_fits(huge));
        assert_eq!(loader_cert(huge).subject, "(a certificate woesafe cannot read)");
        // and read through a dbx: no finding, no allocation
        let facts = examine(&fixture("signed.efi")).unwrap();
        assert_eq!(check(NAME, &facts, &firmware(&[("dbx", &esl(CERT_X509, &[huge]))])), []);
        for (der, fits) in [
            (&b"\x30\x03\x30\x01"[..], false),   // inside, longer than what holds it
            (b"\x30\x04\x04\x02\x30\x7f", true), // primitive contents are not elements
            (b"\x30\x02\x1f\x00", false),        // a multi-byte tag
            (b"\x30\x80\x00\x00", false),        // an indefinite length (BER, not DER)
            (b"", false),
        ] {
            assert_eq!(der_fits(der), fits, "{der:02x?}");
        }
        // nesting: MAX_DER_DEPTH levels are followed, one more is refused
        let nested =
            |depth: usize| (0..depth).fold(vec![], |inner, _| [&[0x30, inner.len() as u8][..], &inner].concat());
        assert!(der_fits(&nested(MAX_DER_DEPTH)));
        assert!(!der_fits(&nested(MAX_DER_DEPTH + 1)));
        // a signature whose digest algorithm's parameters declare 256 MiB: noted, its certificates still read
        let mut pe = fixture("signed.efi");
        let sha256_alg = b"\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00";
        let at = pe.windows(sha256_alg.len()).position(|w| w == sha256_alg).unwrap();
        pe[at + 2..at + 15].copy_from_slice(b"\x06\x01\x2a\x05\x84\x0f\xff\xff\xff\0\0\0\0");
        let broken = examine(&pe).unwrap();
        assert_eq!(broken.sha256, facts.sha256);
        assert_eq!(broken.certs, facts.certs);
        assert_eq!(broken.signed_digests, Vec::<Vec<u8>>::new());
        assert_eq!(
            broken.unreadable_signatures,
            ["signature 1: an element's length goes past what holds it (or nests deeper than woesafe reads)"]
        );
    }

    /// Writes the unsigned fixture loader to $WOESAFE_WRITE_FIXTURE (to sign it into
    /// tests/fixtures/revocation/signed.efi: see tests/fixtures/revocation/README).
    #[test]
    #[ignore]
    fn write_unsigned_fixture() {
        let path = std::env::var_os("WOESAFE_WRITE_FIXTURE").expect("WOESAFE_WRITE_FIXTURE");
        std::fs::write(path, fixture_pe(FIXTURE_SBAT)).unwrap();
    }
}
