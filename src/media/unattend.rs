//! Windows 11 setup options as Rufus offers them: an autounattend.xml at the root of the stick that sets the
//! LabConfig keys Windows Setup reads before its hardware checks (TPM 2.0, Secure Boot, 4 GiB of RAM) and
//! BypassNRO (lets the out-of-box experience continue without a network and a Microsoft account).

use serde::{Deserialize, Serialize};

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

/// The answer file for the chosen bypasses (None when nothing is chosen).
pub fn answer_file(choices: &[Bypass], arch: &str) -> Option<String> {
    let chosen = expand(choices);
    if chosen.is_empty() {
        return None;
    }
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
    if chosen.contains(&Bypass::OnlineAccount) {
        // specialize: before the out-of-box experience asks for a network.
        let nro = vec![
            "reg add HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\OOBE /v BypassNRO /t REG_DWORD /d 1 /f"
                .to_string(),
        ];
        xml.push_str("  <settings pass=\"specialize\">\n");
        xml.push_str(&component("Microsoft-Windows-Deployment", arch, &commands("RunSynchronous", &nro)));
        xml.push_str("  </settings>\n");
    }
    xml.push_str("</unattend>\n");
    Some(xml)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
