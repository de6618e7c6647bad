//! Source line information from an object's `.BTF` and `.BTF.ext` sections (what clang emits
//! with `-g`), so that verifier rejections can name the C line they come from.
//!
//! Only what that needs is read: the BTF string table, and the `.BTF.ext` line-info records
//! of one code section (`insn_off` in bytes from the section start, the file name, the text
//! of the line and `line << 10 | column`, all as offsets into the string table). The layout
//! is the kernel's (`Documentation/bpf/btf.rst`). Every read is bounds-checked: a malformed
//! section yields no line information, never a panic.

/// One line of C source, as BTF records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLine {
    pub file: String,
    pub line: u32,
    pub column: u32,
    /// The text of the line (as clang recorded it; may be empty).
    pub text: String,
}

impl core::fmt::Display for SourceLine {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)?;
        if self.column > 0 {
            write!(f, ":{}", self.column)?;
        }
        let text = self.text.trim();
        if !text.is_empty() {
            write!(f, " `{text}`")?;
        }
        Ok(())
    }
}

const BTF_MAGIC: u16 = 0xeb9f;
/// `struct btf_header`: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
const BTF_HEADER_MIN: usize = 24;
/// `struct btf_ext_header` up to the line info: magic, version, flags, hdr_len,
/// func_info_off, func_info_len, line_info_off, line_info_len.
const BTF_EXT_HEADER_MIN: usize = 24;
/// `struct bpf_line_info`: insn_off, file_name_off, line_off, line_col.
const LINE_INFO_MIN: usize = 16;

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn usize_at(b: &[u8], at: usize) -> Option<usize> {
    usize::try_from(u32_at(b, at)?).ok()
}

/// `len` bytes of `b` from `at`.
fn slice(b: &[u8], at: usize, len: usize) -> Option<&[u8]> {
    b.get(at..at.checked_add(len)?)
}

/// The string table of a `.BTF` section.
fn strings(btf: &[u8]) -> Option<&[u8]> {
    if u16_at(btf, 0)? != BTF_MAGIC {
        return None;
    }
    let hdr_len = usize_at(btf, 4)?;
    if hdr_len < BTF_HEADER_MIN {
        return None;
    }
    let str_off = usize_at(btf, 16)?;
    let str_len = usize_at(btf, 20)?;
    slice(btf, hdr_len.checked_add(str_off)?, str_len)
}

/// The NUL-terminated string at `off` of the table.
fn string(table: &[u8], off: u32) -> Option<String> {
    let rest = table.get(usize::try_from(off).ok()?..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// The line records of code section `section`, as (instruction index in the section, line),
/// in the order clang wrote them (by instruction). Empty when the object has no (readable)
/// line information for it.
pub fn section_lines(btf: &[u8], btf_ext: &[u8], section: &str) -> Vec<(usize, SourceLine)> {
    lines(btf, btf_ext, section).unwrap_or_default()
}

fn lines(btf: &[u8], ext: &[u8], section: &str) -> Option<Vec<(usize, SourceLine)>> {
    let table = strings(btf)?;
    if u16_at(ext, 0)? != BTF_MAGIC {
        return None;
    }
    let hdr_len = usize_at(ext, 4)?;
    if hdr_len < BTF_EXT_HEADER_MIN {
        return None;
    }
    let off = usize_at(ext, 16)?;
    let len = usize_at(ext, 20)?;
    let info = slice(ext, hdr_len.checked_add(off)?, len)?;
    let rec_size = usize_at(info, 0)?;
    if rec_size < LINE_INFO_MIN {
        return None;
    }
    let mut out = Vec::new();
    let mut at = 4;
    // Per section: sec_name_off, num_info, then num_info records.
    while at < info.len() {
        let name = string(table, u32_at(info, at)?)?;
        let count = usize_at(info, at + 4)?;
        at += 8;
        let records = slice(info, at, count.checked_mul(rec_size)?)?;
        at += records.len();
        if name != section {
            continue;
        }
        for r in records.chunks_exact(rec_size) {
            let insn_off = usize_at(r, 0)?;
            let line_col = u32_at(r, 12)?;
            out.push((
                insn_off / crate::elf::INSN_SIZE,
                SourceLine {
                    file: string(table, u32_at(r, 4)?).unwrap_or_default(),
                    text: string(table, u32_at(r, 8)?).unwrap_or_default(),
                    line: line_col >> 10,
                    column: line_col & 0x3ff,
                },
            ));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `.BTF` with the given string table and a `.BTF.ext` with the given line records of
    /// section "naam/x" (name at string offset 1).
    fn sections(table: &[u8], records: &[[u32; 4]]) -> (Vec<u8>, Vec<u8>) {
        let mut btf = Vec::new();
        btf.extend(BTF_MAGIC.to_le_bytes());
        btf.extend([1, 0]);
        for v in [24u32, 0, 0, 0, table.len() as u32] {
            btf.extend(v.to_le_bytes());
        }
        btf.extend(table);
        let mut info = Vec::new();
        info.extend(16u32.to_le_bytes());
        info.extend(1u32.to_le_bytes());
        info.extend((records.len() as u32).to_le_bytes());
        for r in records {
            for v in r {
                info.extend(v.to_le_bytes());
            }
        }
        let mut ext = Vec::new();
        ext.extend(BTF_MAGIC.to_le_bytes());
        ext.extend([1, 0]);
        for v in [24u32, 0, 0, 0, info.len() as u32] {
            ext.extend(v.to_le_bytes());
        }
        ext.extend(info);
        (btf, ext)
    }

    #[test]
    fn reads_the_lines_of_one_section() {
        let table = b"\0naam/x\0a.c\0  int y = 1;\0";
        let (btf, ext) = sections(table, &[[0, 8, 12, (7 << 10) | 3], [16, 8, 12, 9 << 10]]);
        let l = section_lines(&btf, &ext, "naam/x");
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].0, 0);
        assert_eq!(l[1].0, 2);
        assert_eq!(l[0].1.to_string(), "a.c:7:3 `int y = 1;`");
        assert_eq!(l[1].1.line, 9);
        assert!(section_lines(&btf, &ext, "other").is_empty());
    }

    #[test]
    fn malformed_sections_give_nothing_and_never_panic() {
        let table = b"\0naam/x\0a.c\0t\0";
        let (btf, ext) = sections(table, &[[0, 8, 12, 1 << 10]]);
        for cut in 0..ext.len() {
            let _ = section_lines(&btf, &ext[..cut], "naam/x");
        }
        for cut in 0..btf.len() {
            let _ = section_lines(&btf[..cut], &ext, "naam/x");
        }
        let mut bad = ext.clone();
        bad[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(section_lines(&btf, &bad, "naam/x").is_empty());
        let mut huge = ext.clone();
        let n = huge.len();
        huge[n - 20..n - 16].copy_from_slice(&u32::MAX.to_le_bytes());
        let _ = section_lines(&btf, &huge, "naam/x");
    }
}
