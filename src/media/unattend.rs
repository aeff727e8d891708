//! Windows 11 setup options as Rufus offers them: an autounattend.xml at the root of the stick that sets the
//! LabConfig keys Windows Setup reads before its hardware checks (TPM 2.0, Secure Boot, 4 GiB of RAM) and
//! BypassNRO (lets the out-of-box experience continue without a network and a Microsoft account), and in the
//! out-of-box experience a local account, the regional settings, no data collection and no BitLocker device
//! encryption (`SetupOptions`); each setting in the configuration pass Windows reads it in.

pub mod account;
pub mod regional;
mod tables;

use serde::{Deserialize, Serialize};

pub use regional::Regional;

pub const FILE_NAME: &str = "autounattend.xml";

/// One thing to bypass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Bypass {
    /// Skip the TPM 2.0 requirement (LabConfig\BypassTPMCheck)
    Tpm,
    /// Skip the Secure Boot requirement (LabConfig\BypassSecureBootCheck)
    Secureboot,
    /// Skip the 4 GiB RAM requirement (LabConfig\BypassRAMCheck)
    Ram,
    /// Allow a local account without network during setup (OOBE\BypassNRO)
    OnlineAccount,
    /// All of the above
    All,
}

impl Bypass {
    /// The registry values behind the choice (LabConfig name, or BypassNRO).
    fn value(self) -> &'static str {
        match self {
            Bypass::Tpm => "BypassTPMCheck",
            Bypass::Secureboot => "BypassSecureBootCheck",
            Bypass::Ram => "BypassRAMCheck",
            Bypass::OnlineAccount => "BypassNRO",
            Bypass::All => "",
        }
    }
}

/// The processor architecture Windows Setup expects in the answer file, from the ISO's UEFI loader.
pub fn architecture(entries: &[super::SourceEntry]) -> &'static str {
    let has = |p: &str| entries.iter().any(|e| e.path.eq_ignore_ascii_case(p));
    if has("efi/boot/bootaa64.efi") {
        "arm64"
    } else if has("efi/boot/bootia32.efi") && !has("efi/boot/bootx64.efi") {
        "x86"
    } else {
        "amd64"
    }
}

fn expand(choices: &[Bypass]) -> Vec<Bypass> {
    let mut v: Vec<Bypass> = if choices.contains(&Bypass::All) {
        vec![Bypass::Tpm, Bypass::Secureboot, Bypass::Ram, Bypass::OnlineAccount]
    } else {
        choices.to_vec()
    };
    v.sort();
    v.dedup();
    v
}

fn component(name: &str, arch: &str, body: &str) -> String {
    format!(
        "    <component name=\"{name}\" processorArchitecture=\"{arch}\" publicKeyToken=\"31bf3856ad364e35\" \
         language=\"neutral\" versionScope=\"nonSxS\" \
         xmlns:wcm=\"http://schemas.microsoft.com/WMIConfig/2002/State\" \
         xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n{body}    </component>\n"
    )
}

fn commands(element: &str, lines: &[String]) -> String {
    let mut out = format!("      <{element}>\n");
    for (i, cmd) in lines.iter().enumerate() {
        out.push_str(&format!(
            "        <{element}Command wcm:action=\"add\">\n          <Order>{}</Order>\n          <Path>{cmd}</Path>\n        </{element}Command>\n",
            i + 1
        ));
    }
    out.push_str(&format!("      </{element}>\n"));
    out
}

/// Everything the answer file sets: the bypasses and the out-of-box experience's options, already checked
/// (`account::check`, `regional::resolve`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupOptions {
    pub bypass: Vec<Bypass>,
    /// --local-account: an administrator with an empty password that must be changed at first logon.
    pub local_account: Option<String>,
    /// --regional: locale, display language and time zone.
    pub regional: Option<Regional>,
    /// --no-data-collection: no EULA page, and the privacy questions answered "no".
    pub no_data_collection: bool,
    /// --no-bitlocker: no automatic device encryption.
    pub no_bitlocker: bool,
}

impl SetupOptions {
    /// Only bypasses (the `--bypass` of before).
    pub fn bypassing(choices: &[Bypass]) -> SetupOptions {
        SetupOptions { bypass: choices.to_vec(), ..SetupOptions::default() }
    }

    /// Whether an answer file is written at all.
    pub fn writes_answer_file(&self) -> bool {
        !self.bypass.is_empty()
            || self.local_account.is_some()
            || self.regional.is_some()
            || self.no_data_collection
            || self.no_bitlocker
    }

    /// The options that write the answer file, as the command line names them (for messages).
    pub fn option_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        for (on, name) in [
            (!self.bypass.is_empty(), "--bypass"),
            (self.local_account.is_some(), "--local-account"),
            (self.regional.is_some(), "--regional"),
            (self.no_data_collection, "--no-data-collection"),
            (self.no_bitlocker, "--no-bitlocker"),
        ] {
            if on {
                v.push(name);
            }
        }
        v
    }

    /// What the answer file sets, in one line: "bypassing tpm, ram; local account alice; ...".
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.bypass.is_empty() {
            let names: Vec<String> = self.bypass.iter().map(|b| format!("{b:?}").to_lowercase()).collect();
            parts.push(format!("bypassing {}", names.join(", ")));
        }
        if let Some(a) = &self.local_account {
            parts.push(format!("local account {a} (empty password, to be changed at first logon)"));
        }
        if let Some(r) = &self.regional {
            let zone = r.time_zone.as_deref().unwrap_or("Windows' own time zone");
            parts.push(format!("regional settings {} (display language {}), {zone}", r.locale, r.ui_language));
        }
        if self.no_data_collection {
            parts.push("no data collection".into());
        }
        if self.no_bitlocker {
            parts.push("no BitLocker device encryption".into());
        }
        parts.join("; ")
    }
}

/// `text` as XML character data or attribute value.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The registry value behind --no-bitlocker: Windows does not start device encryption on its own.
const PREVENT_DEVICE_ENCRYPTION: &str =
    "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker /v PreventDeviceEncryption /t REG_DWORD /d 1 /f";

/// The answer file for the chosen options (None when nothing is chosen).
pub fn answer_file(opts: &SetupOptions, arch: &str) -> Option<String> {
    if !opts.writes_answer_file() {
        return None;
    }
    let chosen = expand(&opts.bypass);
    let lab: Vec<String> = chosen
        .iter()
        .filter(|b| **b != Bypass::OnlineAccount)
        .map(|b| format!("reg add HKLM\\SYSTEM\\Setup\\LabConfig /v {} /t REG_DWORD /d 1 /f", b.value()))
        .collect();
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- Written by woesafe: Windows 11 setup options -->\n\
         <unattend xmlns=\"urn:schemas-microsoft-com:unattend\">\n",
    );
    if !lab.is_empty() {
        // windowsPE: before Setup checks the hardware.
        xml.push_str("  <settings pass=\"windowsPE\">\n");
        xml.push_str(&component("Microsoft-Windows-Setup", arch, &commands("RunSynchronous", &lab)));
        xml.push_str("  </settings>\n");
    }
    let mut special = Vec::new();
    if chosen.contains(&Bypass::OnlineAccount) {
        // specialize: before the out-of-box experience asks for a network.
        special.push(
            "reg add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\OOBE /v BypassNRO /t REG_DWORD /d 1 /f"
                .to_string(),
        );
    }
    if opts.no_bitlocker {
        // specialize too: the value is there before anything could start encrypting.
        special.push(PREVENT_DEVICE_ENCRYPTION.to_string());
    }
    if !special.is_empty() {
        xml.push_str("  <settings pass=\"specialize\">\n");
        xml.push_str(&component("Microsoft-Windows-Deployment", arch, &commands("RunSynchronous", &special)));
        xml.push_str("  </settings>\n");
    }
    let oobe = oobe_system(opts, arch);
    if !oobe.is_empty() {
        xml.push_str("  <settings pass=\"oobeSystem\">\n");
        xml.push_str(&oobe);
        xml.push_str("  </settings>\n");
    }
    xml.push_str("</unattend>\n");
    Some(xml)
}

/// Whether `data` is, byte for byte, an answer file woesafe writes for an ISO of this architecture (for some
/// options): the options are read back from the file, then the file is written again and compared.
pub fn is_ours(data: &[u8], arch: &str) -> bool {
    let Ok(xml) = std::str::from_utf8(data) else { return false };
    let Ok(doc) = roxmltree::Document::parse(xml) else { return false };
    let text = |tag: &str| doc.descendants().find(|n| n.has_tag_name(tag)).and_then(|n| n.text()).map(str::to_string);
    let paths: Vec<&str> = doc.descendants().filter(|n| n.has_tag_name("Path")).filter_map(|n| n.text()).collect();
    let bypass = [Bypass::Tpm, Bypass::Secureboot, Bypass::Ram, Bypass::OnlineAccount]
        .into_iter()
        .filter(|b| paths.iter().any(|p| p.contains(&format!(" /v {} ", b.value()))))
        .collect();
    // Only what the options could have produced: a known locale and zone, a name --local-account accepts.
    let regional = match text("InputLocale") {
        Some(locale) => {
            let Ok(r) = regional::regional(&locale, "", text("TimeZone").as_deref().map(|z| (z, ""))) else {
                return false;
            };
            Some(r)
        }
        None => None,
    };
    let local_account = doc
        .descendants()
        .find(|n| n.has_tag_name("LocalAccount"))
        .and_then(|a| a.children().find(|n| n.has_tag_name("Name")).and_then(|n| n.text()).map(str::to_string));
    if local_account.as_deref().is_some_and(|n| account::check(n).is_err()) {
        return false;
    }
    let opts = SetupOptions {
        bypass,
        local_account,
        regional,
        no_data_collection: text("HideEULAPage").is_some(),
        no_bitlocker: doc.descendants().any(|n| n.has_tag_name("PreventDeviceEncryption")),
    };
    answer_file(&opts, arch).is_some_and(|x| x.as_bytes() == data)
}

/// The oobeSystem pass's components: what the out-of-box experience applies (or stops asking for).
fn oobe_system(opts: &SetupOptions, arch: &str) -> String {
    let mut out = String::new();
    let mut shell = String::new();
    if opts.no_data_collection {
        shell.push_str(
            "      <OOBE>\n        <HideEULAPage>true</HideEULAPage>\n        <ProtectYourPC>3</ProtectYourPC>\n      </OOBE>\n",
        );
    }
    if let Some(zone) = opts.regional.as_ref().and_then(|r| r.time_zone.as_deref()) {
        shell.push_str(&format!("      <TimeZone>{}</TimeZone>\n", escape(zone)));
    }
    if let Some(name) = &opts.local_account {
        let name = escape(name);
        shell.push_str(&format!(
            "      <UserAccounts>\n        <LocalAccounts>\n          <LocalAccount wcm:action=\"add\">\n\
             \x20           <Name>{name}</Name>\n            <DisplayName>{name}</DisplayName>\n\
             \x20           <Group>Administrators</Group>\n            <Password>\n\
             \x20             <Value>{}</Value>\n              <PlainText>false</PlainText>\n\
             \x20           </Password>\n          </LocalAccount>\n        </LocalAccounts>\n      </UserAccounts>\n",
            account::empty_password_value()
        ));
        // Windows allows one FirstLogonCommands: the password must be changed at the first logon, and the
        // change then stays valid (`net user` would otherwise let it expire like any new password).
        let first =
            [format!("net user &quot;{name}&quot; /logonpasswordchg:yes"), "net accounts /maxpwage:unlimited".into()];
        shell.push_str("      <FirstLogonCommands>\n");
        for (i, cmd) in first.iter().enumerate() {
            shell.push_str(&format!(
                "        <SynchronousCommand wcm:action=\"add\">\n          <Order>{}</Order>\n          \
                 <CommandLine>{cmd}</CommandLine>\n        </SynchronousCommand>\n",
                i + 1
            ));
        }
        shell.push_str("      </FirstLogonCommands>\n");
    }
    if !shell.is_empty() {
        out.push_str(&component("Microsoft-Windows-Shell-Setup", arch, &shell));
    }
    if let Some(r) = &opts.regional {
        let (l, ui) = (escape(&r.locale), escape(&r.ui_language));
        out.push_str(&component(
            "Microsoft-Windows-International-Core",
            arch,
            &format!(
                "      <InputLocale>{l}</InputLocale>\n      <SystemLocale>{l}</SystemLocale>\n      \
                 <UserLocale>{l}</UserLocale>\n      <UILanguage>{ui}</UILanguage>\n      \
                 <UILanguageFallback>{}</UILanguageFallback>\n",
                regional::UI_FALLBACK
            ),
        ));
    }
    if opts.no_bitlocker {
        out.push_str(&component(
            "Microsoft-Windows-SecureStartup-FilterDriver",
            arch,
            "      <PreventDeviceEncryption>true</PreventDeviceEncryption>\n",
        ));
        out.push_str(&component(
            "Microsoft-Windows-EnhancedStorage-Adm",
            arch,
            "      <TCGSecurityActivationDisabled>1</TCGSecurityActivationDisabled>\n",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answer file of `--bypass` alone.
    fn answer_file(choices: &[Bypass], arch: &str) -> Option<String> {
        super::answer_file(&SetupOptions::bypassing(choices), arch)
    }

    #[test]
    fn all_keys_by_key() {
        let x = answer_file(&[Bypass::All], "amd64").unwrap();
        for key in ["BypassTPMCheck", "BypassSecureBootCheck", "BypassRAMCheck"] {
            assert!(
                x.contains(&format!("reg add HKLM\\SYSTEM\\Setup\\LabConfig /v {key} /t REG_DWORD /d 1 /f")),
                "{key}:\n{x}"
            );
        }
        assert!(x.contains("CurrentVersion\\OOBE /v BypassNRO /t REG_DWORD /d 1 /f"));
        assert!(x.contains("<settings pass=\"windowsPE\">") && x.contains("<settings pass=\"specialize\">"));
        assert_eq!(x.matches("<Order>1</Order>").count(), 2);
        assert!(x.contains("<Order>3</Order>"));
        assert!(x.contains("processorArchitecture=\"amd64\""));
    }

    #[test]
    fn only_what_was_asked() {
        let x = answer_file(&[Bypass::Tpm], "arm64").unwrap();
        assert!(x.contains("BypassTPMCheck") && !x.contains("BypassRAMCheck") && !x.contains("BypassNRO"));
        assert!(!x.contains("specialize") && x.contains("processorArchitecture=\"arm64\""));
        let y = answer_file(&[Bypass::OnlineAccount], "amd64").unwrap();
        assert!(!y.contains("windowsPE") && y.contains("BypassNRO"));
        assert_eq!(answer_file(&[], "amd64"), None);
        assert_eq!(answer_file(&[Bypass::Ram, Bypass::Ram], "amd64").unwrap().matches("BypassRAMCheck").count(), 1);
    }

    #[test]
    fn architecture_from_loaders() {
        let e = |p: &str| super::super::SourceEntry { path: p.into(), is_dir: false, size: 1, mtime: 0 };
        assert_eq!(architecture(&[e("efi/boot/bootx64.efi")]), "amd64");
        assert_eq!(architecture(&[e("EFI/BOOT/BOOTAA64.EFI")]), "arm64");
        assert_eq!(architecture(&[e("efi/boot/bootia32.efi")]), "x86");
        assert_eq!(architecture(&[]), "amd64");
    }

    const NS: &str = "urn:schemas-microsoft-com:unattend";

    /// Every setting (element with text and no element children) as (pass, component, path below the
    /// component, text), after checking the document's shape: one <unattend>, each pass once, each component
    /// once per pass, with the given architecture.
    fn settings(xml: &str, arch: &str) -> Vec<(String, String, String, String)> {
        let doc = roxmltree::Document::parse(xml).expect("well-formed");
        let root = doc.root_element();
        assert_eq!((root.tag_name().namespace(), root.tag_name().name()), (Some(NS), "unattend"));
        let mut out = Vec::new();
        let mut passes = Vec::new();
        for pass in root.children().filter(|n| n.is_element()) {
            assert_eq!(pass.tag_name().name(), "settings");
            let p = pass.attribute("pass").unwrap().to_string();
            assert!(!passes.contains(&p), "pass {p} twice");
            passes.push(p.clone());
            let mut comps = Vec::new();
            for c in pass.children().filter(|n| n.is_element()) {
                assert_eq!(c.tag_name().name(), "component");
                let name = c.attribute("name").unwrap().to_string();
                assert!(!comps.contains(&name), "{name} twice in {p}");
                comps.push(name.clone());
                assert_eq!(c.attribute("processorArchitecture"), Some(arch));
                assert_eq!(c.attribute("publicKeyToken"), Some("31bf3856ad364e35"));
                for leaf in c.descendants().filter(|n| n.is_element() && !n.children().any(|k| k.is_element())) {
                    let path: Vec<&str> = leaf
                        .ancestors()
                        .take_while(|a| *a != c)
                        .map(|a| a.tag_name().name())
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect();
                    out.push((p.clone(), name.clone(), path.join("/"), leaf.text().unwrap_or("").to_string()));
                }
            }
        }
        out
    }

    /// The one value of a setting, asserting it is in `pass` and `component` and nowhere else.
    fn one(s: &[(String, String, String, String)], pass: &str, component: &str, path: &str) -> String {
        let hits: Vec<_> = s.iter().filter(|(_, _, p, _)| p == path).collect();
        assert_eq!(hits.len(), 1, "{path}: {hits:?}");
        assert_eq!((hits[0].0.as_str(), hits[0].1.as_str()), (pass, component), "{path}");
        hits[0].3.clone()
    }

    fn commands_of(s: &[(String, String, String, String)], pass: &str, what: &str) -> Vec<String> {
        s.iter().filter(|(p, _, path, _)| p == pass && path.ends_with(what)).map(|x| x.3.clone()).collect()
    }

    fn full() -> SetupOptions {
        SetupOptions {
            bypass: vec![Bypass::All],
            local_account: Some("O'Brien".into()),
            regional: Some(regional::regional("de_DE.UTF-8", "", Some(("Europe/Berlin", ""))).unwrap()),
            no_data_collection: true,
            no_bitlocker: true,
        }
    }

    const SHELL: &str = "Microsoft-Windows-Shell-Setup";
    const INTL: &str = "Microsoft-Windows-International-Core";

    #[test]
    fn local_account_alone() {
        let o = SetupOptions { local_account: Some("alice".into()), ..SetupOptions::default() };
        let x = super::answer_file(&o, "amd64").unwrap();
        let s = settings(&x, "amd64");
        let acc = "UserAccounts/LocalAccounts/LocalAccount";
        assert_eq!(one(&s, "oobeSystem", SHELL, &format!("{acc}/Name")), "alice");
        assert_eq!(one(&s, "oobeSystem", SHELL, &format!("{acc}/DisplayName")), "alice");
        assert_eq!(one(&s, "oobeSystem", SHELL, &format!("{acc}/Group")), "Administrators");
        assert_eq!(one(&s, "oobeSystem", SHELL, &format!("{acc}/Password/Value")), "UABhAHMAcwB3AG8AcgBkAA==");
        assert_eq!(one(&s, "oobeSystem", SHELL, &format!("{acc}/Password/PlainText")), "false");
        assert_eq!(
            commands_of(&s, "oobeSystem", "FirstLogonCommands/SynchronousCommand/CommandLine"),
            ["net user \"alice\" /logonpasswordchg:yes", "net accounts /maxpwage:unlimited"]
        );
        assert_eq!(commands_of(&s, "oobeSystem", "SynchronousCommand/Order"), ["1", "2"]);
        let doc = roxmltree::Document::parse(&x).unwrap();
        let la = doc.descendants().find(|n| n.has_tag_name("LocalAccount")).unwrap();
        assert_eq!(la.attribute(("http://schemas.microsoft.com/WMIConfig/2002/State", "action")), Some("add"));
        assert!(!x.contains("windowsPE") && !x.contains("specialize") && !x.contains(INTL));
        assert!(!x.contains("HideEULAPage") && !x.contains("PreventDeviceEncryption") && !x.contains("TimeZone"));
        assert!(is_ours(x.as_bytes(), "amd64") && !is_ours(x.as_bytes(), "arm64"));
    }

    #[test]
    fn regional_alone() {
        let r = regional::regional("fr_CA.UTF-8", "", Some(("America/Toronto", ""))).unwrap();
        let o = SetupOptions { regional: Some(r), ..SetupOptions::default() };
        let x = super::answer_file(&o, "arm64").unwrap();
        let s = settings(&x, "arm64");
        for key in ["InputLocale", "SystemLocale", "UserLocale"] {
            assert_eq!(one(&s, "oobeSystem", INTL, key), "fr-CA", "{key}");
        }
        assert_eq!(one(&s, "oobeSystem", INTL, "UILanguage"), "fr-CA");
        assert_eq!(one(&s, "oobeSystem", INTL, "UILanguageFallback"), "en-US");
        assert_eq!(one(&s, "oobeSystem", SHELL, "TimeZone"), "Eastern Standard Time");
        assert_eq!(s.len(), 6, "{s:?}");
        // No zone: no TimeZone, and no Shell-Setup at all.
        let o = SetupOptions { regional: Some(regional::regional("ja_JP", "", None).unwrap()), ..Default::default() };
        let x = super::answer_file(&o, "amd64").unwrap();
        assert!(!x.contains("TimeZone") && !x.contains(SHELL) && x.contains("<UserLocale>ja-JP</UserLocale>"));
        assert!(is_ours(x.as_bytes(), "amd64"));
    }

    #[test]
    fn no_data_collection_alone() {
        let o = SetupOptions { no_data_collection: true, ..SetupOptions::default() };
        let x = super::answer_file(&o, "amd64").unwrap();
        let s = settings(&x, "amd64");
        assert_eq!(one(&s, "oobeSystem", SHELL, "OOBE/HideEULAPage"), "true");
        assert_eq!(one(&s, "oobeSystem", SHELL, "OOBE/ProtectYourPC"), "3");
        assert_eq!(s.len(), 2, "{s:?}");
    }

    #[test]
    fn no_bitlocker_alone() {
        let o = SetupOptions { no_bitlocker: true, ..SetupOptions::default() };
        let x = super::answer_file(&o, "x86").unwrap();
        let s = settings(&x, "x86");
        assert_eq!(
            one(&s, "oobeSystem", "Microsoft-Windows-SecureStartup-FilterDriver", "PreventDeviceEncryption"),
            "true"
        );
        assert_eq!(
            one(&s, "oobeSystem", "Microsoft-Windows-EnhancedStorage-Adm", "TCGSecurityActivationDisabled"),
            "1"
        );
        assert_eq!(
            commands_of(&s, "specialize", "RunSynchronous/RunSynchronousCommand/Path"),
            [PREVENT_DEVICE_ENCRYPTION]
        );
        assert!(PREVENT_DEVICE_ENCRYPTION.contains(
            "HKLM\\SYSTEM\\CurrentControlSet\\Control\\BitLocker /v PreventDeviceEncryption /t REG_DWORD /d 1"
        ));
        assert!(!x.contains("BypassNRO") && !x.contains("windowsPE"));
    }

    #[test]
    fn everything_at_once() {
        let x = super::answer_file(&full(), "amd64").unwrap();
        let s = settings(&x, "amd64");
        // The bypasses, as --bypass all writes them.
        assert_eq!(
            commands_of(&s, "windowsPE", "RunSynchronousCommand/Path"),
            ["BypassTPMCheck", "BypassSecureBootCheck", "BypassRAMCheck"]
                .map(|k| format!("reg add HKLM\\SYSTEM\\Setup\\LabConfig /v {k} /t REG_DWORD /d 1 /f"))
        );
        assert!(s.iter().filter(|x| x.0 == "windowsPE").all(|x| x.1 == "Microsoft-Windows-Setup"));
        let special = commands_of(&s, "specialize", "RunSynchronousCommand/Path");
        assert_eq!(special.len(), 2);
        assert!(special[0].ends_with("CurrentVersion\\OOBE /v BypassNRO /t REG_DWORD /d 1 /f"));
        assert_eq!(special[1], PREVENT_DEVICE_ENCRYPTION);
        assert_eq!(commands_of(&s, "specialize", "RunSynchronousCommand/Order"), ["1", "2"]);
        assert!(s.iter().filter(|x| x.0 == "specialize").all(|x| x.1 == "Microsoft-Windows-Deployment"));
        // The out-of-box experience's: each once, in its component; the name escaped and read back as given.
        assert_eq!(one(&s, "oobeSystem", SHELL, "UserAccounts/LocalAccounts/LocalAccount/Name"), "O'Brien");
        assert!(x.contains("<Name>O&apos;Brien</Name>"));
        assert_eq!(
            commands_of(&s, "oobeSystem", "SynchronousCommand/CommandLine")[0],
            "net user \"O'Brien\" /logonpasswordchg:yes"
        );
        assert_eq!(one(&s, "oobeSystem", SHELL, "OOBE/HideEULAPage"), "true");
        assert_eq!(one(&s, "oobeSystem", SHELL, "OOBE/ProtectYourPC"), "3");
        assert_eq!(one(&s, "oobeSystem", SHELL, "TimeZone"), "W. Europe Standard Time");
        for key in ["InputLocale", "SystemLocale", "UserLocale", "UILanguage"] {
            assert_eq!(one(&s, "oobeSystem", INTL, key), "de-DE", "{key}");
        }
        assert_eq!(one(&s, "oobeSystem", INTL, "UILanguageFallback"), "en-US");
        assert_eq!(
            one(&s, "oobeSystem", "Microsoft-Windows-SecureStartup-FilterDriver", "PreventDeviceEncryption"),
            "true"
        );
        assert_eq!(
            one(&s, "oobeSystem", "Microsoft-Windows-EnhancedStorage-Adm", "TCGSecurityActivationDisabled"),
            "1"
        );
        let mut passes: Vec<&str> = s.iter().map(|x| x.0.as_str()).collect();
        passes.dedup();
        assert_eq!(passes, ["windowsPE", "specialize", "oobeSystem"]);
        assert!(is_ours(x.as_bytes(), "amd64"));
    }

    #[test]
    fn each_pair_is_well_formed_and_recognised() {
        let f = full();
        let parts: [SetupOptions; 5] = [
            SetupOptions { bypass: f.bypass.clone(), ..Default::default() },
            SetupOptions { local_account: f.local_account.clone(), ..Default::default() },
            SetupOptions { regional: f.regional.clone(), ..Default::default() },
            SetupOptions { no_data_collection: true, ..Default::default() },
            SetupOptions { no_bitlocker: true, ..Default::default() },
        ];
        let merge = |a: &SetupOptions, b: &SetupOptions| SetupOptions {
            bypass: [a.bypass.clone(), b.bypass.clone()].concat(),
            local_account: a.local_account.clone().or(b.local_account.clone()),
            regional: a.regional.clone().or(b.regional.clone()),
            no_data_collection: a.no_data_collection || b.no_data_collection,
            no_bitlocker: a.no_bitlocker || b.no_bitlocker,
        };
        for a in &parts {
            for b in &parts {
                let o = merge(a, b);
                let x = super::answer_file(&o, "amd64").unwrap();
                let s = settings(&x, "amd64");
                assert!(!s.is_empty());
                assert!(is_ours(x.as_bytes(), "amd64"), "{o:?}");
                assert_eq!(o.option_names().len(), if a == b { 1 } else { 2 });
            }
        }
        // A file changed by a byte is not ours; nor is a file that is not XML.
        let x = super::answer_file(&full(), "amd64").unwrap().replace("de-DE", "de-AT");
        assert!(!is_ours(x.as_bytes(), "amd64"));
        assert!(!is_ours(b"\xff<unattend/>", "amd64"));
        assert!(!SetupOptions::default().writes_answer_file());
        assert_eq!(super::answer_file(&SetupOptions::default(), "amd64"), None);
    }

    #[test]
    fn bypass_files_are_recognised() {
        let all = [Bypass::Tpm, Bypass::Secureboot, Bypass::Ram, Bypass::OnlineAccount];
        for mask in 1u32..16 {
            let set: Vec<Bypass> =
                all.iter().enumerate().filter(|(i, _)| mask & (1 << i) != 0).map(|(_, b)| *b).collect();
            let x = answer_file(&set, "amd64").unwrap();
            settings(&x, "amd64");
            assert!(is_ours(x.as_bytes(), "amd64"), "{set:?}");
        }
    }

    #[test]
    fn summary_line() {
        assert_eq!(SetupOptions::bypassing(&[Bypass::All]).summary(), "bypassing all");
        let s = full().summary();
        assert_eq!(
            s,
            "bypassing all; local account O'Brien (empty password, to be changed at first logon); regional settings \
             de-DE (display language de-DE), W. Europe Standard Time; no data collection; no BitLocker device encryption"
        );
    }
}
