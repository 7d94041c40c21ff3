//! Pure parsers for the `/proc` and `/sys` formats the host checks read.
//! Each takes the file's text and never panics on odd input.

/// The selected value of a sysfs multiple-choice file, written as
/// `always [madvise] never`; `None` when nothing is bracketed.
pub fn bracketed(text: &str) -> Option<&str> {
    let start = text.find('[')? + 1;
    let end = start + text[start..].find(']')?;
    Some(text[start..end].trim())
}

/// An integer sysctl value (surrounding whitespace ignored).
pub fn int(text: &str) -> Option<i64> {
    text.trim().parse().ok()
}

/// A kernel CPU list such as `0-3,5,8-9` (as in `/sys/devices/system/cpu/online`
/// and `/proc/irq/N/smp_affinity_list`), ascending without duplicates.
pub fn cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let bad = || format!("{part:?} in CPU list {:?} is not N or N-M", text.trim());
        match part.split_once('-') {
            Some((a, b)) => {
                let a: usize = a.trim().parse().map_err(|_| bad())?;
                let b: usize = b.trim().parse().map_err(|_| bad())?;
                if a > b || b - a > 65_536 {
                    return Err(bad());
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().map_err(|_| bad())?),
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

/// Formats CPUs as a kernel CPU list (`0-3,5`).
pub fn format_cpu_list(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// One numbered line of `/proc/interrupts`: the IRQ and its action name
/// (the last column, e.g. `virtio2-input.0` or `eth0-TxRx-3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrqLine {
    /// IRQ number.
    pub irq: u32,
    /// Action (device queue) name.
    pub name: String,
}

/// The numbered IRQ lines of `/proc/interrupts` (the header and the
/// named rows such as `NMI:` or `LOC:` are skipped).
pub fn interrupts(text: &str) -> Vec<IrqLine> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let irq = words.next()?.strip_suffix(':')?.parse().ok()?;
            let name = words.last()?.to_string();
            Some(IrqLine { irq, name })
        })
        .collect()
}

/// The IRQs that belong to network interfaces. `nic_ids` are the names an
/// interface's IRQs can carry: the interface name (`eth0`), its bus device
/// name (`virtio2`) and its PCI address (`0000:3b:00.0`). An IRQ matches an
/// id when its name is the id, starts with it followed by a separator
/// (`virtio2-input.0`, not `virtio20-...`), or names it after an `@`
/// (`mlx5_comp0@pci:0000:3b:00.0`). Virtio configuration vectors
/// (`-config`) carry no traffic and are left out.
pub fn nic_irqs(lines: &[IrqLine], nic_ids: &[String]) -> Vec<IrqLine> {
    lines
        .iter()
        .filter(|l| !l.name.ends_with("-config"))
        .filter(|l| {
            nic_ids.iter().filter(|id| !id.is_empty()).any(|id| {
                let n = l.name.as_str();
                n == id
                    || n.strip_prefix(id.as_str())
                        .and_then(|rest| rest.chars().next())
                        .is_some_and(|c| !c.is_ascii_alphanumeric())
                    || n.split_once('@')
                        .is_some_and(|(_, at)| at.contains(id.as_str()))
            })
        })
        .cloned()
        .collect()
}

/// The fields of a `/proc/PID/status` file that the host checks use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStatus {
    /// `Name`.
    pub name: String,
    /// `PPid`: 2 (`kthreadd`) for a kernel thread.
    pub ppid: i32,
    /// `Cpus_allowed_list`.
    pub cpus_allowed: String,
}

/// Parses a `/proc/PID/status` file; `None` when a field is missing or
/// `PPid` is not a number.
pub fn proc_status(text: &str) -> Option<ProcStatus> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .map(str::trim)
    };
    Some(ProcStatus {
        name: field("Name")?.to_string(),
        ppid: field("PPid")?.parse().ok()?,
        cpus_allowed: field("Cpus_allowed_list")?.to_string(),
    })
}

/// Formats an rlimit value; `RLIM_INFINITY` reads `unlimited`.
pub fn rlimit(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracketed_choices() {
        assert_eq!(bracketed("always [madvise] never\n"), Some("madvise"));
        assert_eq!(bracketed("[always] madvise never"), Some("always"));
        assert_eq!(bracketed("always madvise never"), None);
        assert_eq!(bracketed("[unclosed"), None);
        assert_eq!(int(" 60\n"), Some(60));
        assert_eq!(int("sixty"), None);
    }

    #[test]
    fn cpu_lists_parse_and_format() {
        assert_eq!(cpu_list("0-3,5,8-9\n"), Ok(vec![0, 1, 2, 3, 5, 8, 9]));
        assert_eq!(cpu_list("1"), Ok(vec![1]));
        assert_eq!(cpu_list(""), Ok(vec![]));
        assert_eq!(cpu_list("3,1,1"), Ok(vec![1, 3]));
        assert!(cpu_list("a-b").is_err());
        assert!(cpu_list("5-2").is_err());
        assert_eq!(format_cpu_list(&[0, 1, 2, 3, 5, 8, 9]), "0-3,5,8-9");
        assert_eq!(format_cpu_list(&[]), "");
    }

    const INTERRUPTS: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 35:          0          1 PCI-MSIX-0000:00:02.0   0-edge      virtio1-config
 36:          0     264347 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       1320 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       1135          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 50:          0          0 PCI-MSIX-0000:00:09.0   0-edge      virtio20-input.0
 60:          7          0 IR-PCI-MSI 1048576-edge  mlx5_comp0@pci:0000:3b:00.0
 61:          7          0 IR-PCI-MSI 1048577-edge  eth1-TxRx-0
NMI:          0          0   Non-maskable interrupts
LOC:     123456     654321   Local timer interrupts
";

    #[test]
    fn interrupts_and_nic_matching() {
        let lines = interrupts(INTERRUPTS);
        assert_eq!(lines.len(), 9);
        assert_eq!(
            lines[4],
            IrqLine {
                irq: 38,
                name: "virtio2-input.0".into()
            }
        );
        let ids = vec!["eth0".to_string(), "virtio2".to_string()];
        let nic: Vec<u32> = nic_irqs(&lines, &ids).iter().map(|l| l.irq).collect();
        assert_eq!(nic, vec![38, 39]);
        let ids = vec!["eth1".to_string(), "0000:3b:00.0".to_string()];
        let nic: Vec<u32> = nic_irqs(&lines, &ids).iter().map(|l| l.irq).collect();
        assert_eq!(nic, vec![60, 61]);
        assert!(nic_irqs(&lines, &[]).is_empty());
    }

    #[test]
    fn proc_status_fields() {
        let text = "Name:\tkcompactd0\nUmask:\t0000\nState:\tS (sleeping)\nTgid:\t36\nPid:\t36\nPPid:\t2\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n";
        assert_eq!(
            proc_status(text),
            Some(ProcStatus {
                name: "kcompactd0".into(),
                ppid: 2,
                cpus_allowed: "0-1".into()
            })
        );
        assert_eq!(
            proc_status("Name:\tx\nPPid:\tnope\nCpus_allowed_list:\t0\n"),
            None
        );
        assert_eq!(proc_status("Name:\tx\nPPid:\t2\n"), None);
        assert_eq!(proc_status(""), None);
    }

    #[test]
    fn rlimits_format() {
        assert_eq!(rlimit(libc::RLIM_INFINITY), "unlimited");
        assert_eq!(rlimit(8_388_608), "8388608");
    }
}
