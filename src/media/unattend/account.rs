//! `--local-account NAME`: the checks a local account name must pass before it goes into the answer file —
//! Windows' own rules for user names, Rufus's refusal of the built-in accounts' names, and the characters that
//! would change the meaning of the first-logon `net user` command.

/// Windows' longest local user name, in characters.
pub const MAX_LEN: usize = 20;

/// Characters Windows refuses in a user name, and `%` `&` which the first-logon command line would expand or
/// split on.
const FORBIDDEN: &str = "\"/\\[]:;|=,+*?<>@%&";

/// Names Windows already uses for a built-in account or group (compared without regard to case): creating
/// them fails or takes over the built-in one. Administrator's localized names are those Windows ships.
const RESERVED: &[&str] = &[
    "Administrator",
    "Administrateur",
    "Administrador",
    "Administratör",
    "Järjestelmänvalvoja",
    "Rendszergazda",
    "Администратор",
    "Guest",
    "DefaultAccount",
    "WDAGUtilityAccount",
    "HelpAssistant",
    "KRBTGT",
    "Local",
    "None",
    "System",
    "Administrators",
    "Users",
    "Guests",
    "Everyone",
];

/// Why a name cannot be a local account.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    #[error("--local-account: the name is empty; give the user name of the account to create")]
    Empty,
    #[error("--local-account: {name:?} has {len} characters; Windows allows at most {MAX_LEN}")]
    TooLong { name: String, len: usize },
    #[error(
        "--local-account: {name:?} contains {ch:?}, which Windows does not allow in a user name (none of {FORBIDDEN})"
    )]
    Forbidden { name: String, ch: char },
    #[error("--local-account: {name:?} contains a control character; use printable characters only")]
    Control { name: String },
    #[error(
        "--local-account: {name:?} is only dots and spaces, which Windows does not allow; give a name with a letter or digit"
    )]
    OnlyDots { name: String },
    #[error("--local-account: {name:?} starts or ends with a space, which Windows would not keep; remove it")]
    Spaces { name: String },
    #[error("--local-account: {name:?} is the name of a built-in Windows account or group; choose another name")]
    Reserved { name: String },
}

/// The name, checked: Ok(name) when Windows can create a local account of that name.
pub fn check(name: &str) -> Result<String, AccountError> {
    let owned = || name.to_string();
    if name.is_empty() {
        return Err(AccountError::Empty);
    }
    if name.chars().any(char::is_control) {
        return Err(AccountError::Control { name: owned() });
    }
    if let Some(ch) = name.chars().find(|c| FORBIDDEN.contains(*c)) {
        return Err(AccountError::Forbidden { name: owned(), ch });
    }
    let len = name.chars().count();
    if len > MAX_LEN {
        return Err(AccountError::TooLong { name: owned(), len });
    }
    if name.chars().all(|c| c == '.' || c == ' ') {
        return Err(AccountError::OnlyDots { name: owned() });
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(AccountError::Spaces { name: owned() });
    }
    let lower = name.to_lowercase();
    if RESERVED.iter().any(|r| r.to_lowercase() == lower) {
        return Err(AccountError::Reserved { name: owned() });
    }
    Ok(owned())
}

/// The `<Password><Value>` of an empty password: the answer file stores base64 of the UTF-16LE text of the
/// password followed by the word "Password" (what Windows SIM writes when it hides a password).
pub fn empty_password_value() -> String {
    let bytes: Vec<u8> = "Password".encode_utf16().flat_map(u16::to_le_bytes).collect();
    base64(&bytes)
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_names() {
        for n in ["alice", "Jean-Luc", "john.doe", "Ünal", "a b", "x", "Администратор2", "12345678901234567890"]
        {
            assert_eq!(check(n), Ok(n.to_string()), "{n}");
        }
    }

    #[test]
    fn refusals_name_the_problem() {
        assert_eq!(check(""), Err(AccountError::Empty));
        assert!(matches!(check("123456789012345678901"), Err(AccountError::TooLong { len: 21, .. })));
        for ch in ['"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@', '%', '&'] {
            let n = format!("a{ch}b");
            assert_eq!(check(&n), Err(AccountError::Forbidden { name: n.clone(), ch }), "{n}");
        }
        assert!(matches!(check("a\nb"), Err(AccountError::Control { .. })));
        assert!(matches!(check("a\u{7f}"), Err(AccountError::Control { .. })));
        assert!(matches!(check("..."), Err(AccountError::OnlyDots { .. })));
        assert!(matches!(check(". ."), Err(AccountError::OnlyDots { .. })));
        assert!(matches!(check(" bob"), Err(AccountError::Spaces { .. })));
        for n in ["administrator", "GUEST", "DefaultAccount", "wdagutilityaccount", "system", "None", "ADMINISTRATÖR"]
        {
            assert_eq!(check(n), Err(AccountError::Reserved { name: n.to_string() }), "{n}");
        }
        let msg = check("a<b").unwrap_err().to_string();
        assert!(msg.starts_with("--local-account: \"a<b\" contains '<'"), "{msg}");
        let msg = check("Guest").unwrap_err().to_string();
        assert!(msg.contains("built-in Windows account") && msg.contains("choose another name"), "{msg}");
    }

    #[test]
    fn empty_password_encoding() {
        // base64 of UTF-16LE "Password": what Windows reads as an empty, hidden password.
        assert_eq!(empty_password_value(), "UABhAHMAcwB3AG8AcgBkAA==");
        assert_eq!(base64(b"a"), "YQ==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
