//! Loading handler programs from `clang -target bpf` ELF objects.
//!
//! An object holds one or more entry sections (`naam/<name>`, or any executable section other
//! than `.text`) and possibly shared functions in `.text`. A program is its entry section with
//! `.text` appended when it calls into it; `R_BPF_64_32` call relocations are patched to the
//! appended copy. Everything that would need run-time linking — globals, maps, `.rodata`,
//! externs, unknown relocation types — is rejected, naming the symbol and the instruction.
//! Loaded programs have their basic blocks put in forward order ([`crate::relayout`]).
//! Loaded programs have their basic blocks put in forward order ([`crate::relayout`]).

use object::{Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionKind};

/// Size of one eBPF instruction.
pub use crate::btf::SourceLine;

pub const INSN_SIZE: usize = 8;
/// The largest object file a program reads from disk (a REGISTER carries at most 64 KiB;
/// local files may be larger, not endless: `/dev/zero` given as a handler ate the memory).
pub const OBJECT_FILE_MAX: u64 = 16 << 20;
const EM_BPF: u16 = 247;
const R_BPF_64_64: u32 = 1;
const R_BPF_64_32: u32 = 10;
const OP_CALL: u8 = 0x85;
const OP_LDDW: u8 = 0x18;
const PSEUDO_CALL: u8 = 1;

/// A loaded program: a name and its instructions, ready for the verifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    pub name: String,
    pub insns: Vec<u8>,
    /// Where each instruction comes from in the C source, when the object had line
    /// information (`clang -g`).
    pub source: SourceMap,
}

impl Program {
    /// A program from raw instruction bytes (hand-written bytecode, tests).
    pub fn from_insns(name: impl Into<String>, insns: Vec<u8>) -> Self {
        Self {
            name: name.into(),
            insns,
            source: SourceMap::default(),
        }
    }

    pub fn insn_count(&self) -> usize {
        self.insns.len() / INSN_SIZE
    }

    /// The C source line instruction `insn` was compiled from, if known.
    pub fn source_line(&self, insn: usize) -> Option<&SourceLine> {
        self.source.line(insn)
    }
}

/// Source lines per instruction: each instruction has the line of the last BTF line record at
/// or before it in its function.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceMap {
    lines: Vec<SourceLine>,
    /// Per instruction, an index into `lines`.
    of_insn: Vec<Option<u32>>,
}

impl SourceMap {
    pub fn line(&self, insn: usize) -> Option<&SourceLine> {
        let i = (*self.of_insn.get(insn)?)?;
        self.lines.get(i as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Adds the records of a code section placed at instruction `base`, `len` instructions
    /// long (records are in instruction order).
    fn add_section(&mut self, base: usize, len: usize, records: Vec<(usize, SourceLine)>) {
        if self.of_insn.len() < base + len {
            self.of_insn.resize(base + len, None);
        }
        let mut records = records.into_iter().filter(|(i, _)| *i < len).peekable();
        let mut current = None;
        for i in 0..len {
            while let Some((_, line)) = records.next_if(|(at, _)| *at <= i) {
                current = Some(self.lines.len() as u32);
                self.lines.push(line);
            }
            self.of_insn[base + i] = current;
        }
    }

    /// The map of a program whose instruction `k` is the original's `origin[k]`.
    pub fn remap(&self, origin: &[usize]) -> SourceMap {
        if self.is_empty() {
            return SourceMap::default();
        }
        SourceMap {
            lines: self.lines.clone(),
            of_insn: origin
                .iter()
                .map(|&o| self.of_insn.get(o).copied().flatten())
                .collect(),
        }
    }
}

/// Why an object could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("not a valid ELF object")]
    Parse(#[source] object::Error),
    #[error("not an eBPF object (ELF machine {machine}, expected {EM_BPF})")]
    NotBpf { machine: u16 },
    /// ELF, but not the kind of ELF handlers are: they are 64-bit little-endian (`clang
    /// -target bpf` on a little-endian machine, or `-target bpfel`).
    #[error("{what}: eBPF handlers are ELF64 little-endian objects (clang -target bpfel)")]
    WrongElfKind { what: &'static str },
    #[error("an executable section (index {index}) has a name that cannot be read (not UTF-8, or outside the string table)")]
    UnreadableName { index: usize },
    #[error("no section named {name:?} (programs here: {available:?})")]
    NoSuchSection {
        name: String,
        available: Vec<String>,
    },
    #[error("the object holds no program (no executable section other than .text)")]
    NoProgram,
    #[error("section {section:?} is {len} bytes, not a whole number of 8-byte instructions")]
    BadSize { section: String, len: usize },
    #[error("section {section:?} instruction {insn}: refers to {symbol:?}, which is not defined in the object (externs are not supported)")]
    Extern {
        section: String,
        insn: usize,
        symbol: String,
    },
    #[error("section {section:?} instruction {insn}: uses global data or a map ({symbol:?}); handlers may only use their context and stack")]
    GlobalData {
        section: String,
        insn: usize,
        symbol: String,
    },
    #[error("section {section:?} instruction {insn}: unsupported relocation type {r_type} against {symbol:?}")]
    UnknownRelocation {
        section: String,
        insn: usize,
        r_type: u32,
        symbol: String,
    },
    #[error("section {section:?} instruction {insn}: call relocation against {symbol:?} is not a call into .text")]
    BadCall {
        section: String,
        insn: usize,
        symbol: String,
    },
    #[error("section {section:?} instruction {insn}: call target {target} lies outside .text ({text_insns} instructions)")]
    CallOutOfRange {
        section: String,
        insn: usize,
        target: i64,
        text_insns: usize,
    },
}

/// A parsed handler object.
pub struct ElfObject<'data> {
    file: object::File<'data>,
}

impl<'data> ElfObject<'data> {
    pub fn parse(bytes: &'data [u8]) -> Result<Self, ElfError> {
        let file = object::File::parse(bytes).map_err(ElfError::Parse)?;
        match &file {
            object::File::Elf64(elf) => {
                if elf.endian() == object::Endianness::Big {
                    let what = "a big-endian ELF object";
                    return Err(ElfError::WrongElfKind { what });
                }
                let machine = elf.elf_header().e_machine.get(elf.endian());
                if machine != EM_BPF {
                    return Err(ElfError::NotBpf { machine });
                }
            }
            object::File::Elf32(_) => {
                let what = "a 32-bit ELF object";
                return Err(ElfError::WrongElfKind { what });
            }
            _ => {
                let what = "not an ELF object (another object format)";
                return Err(ElfError::WrongElfKind { what });
            }
        }
        Ok(Self { file })
    }

    /// Names of the entry sections, in file order.
    pub fn program_names(&self) -> Vec<String> {
        self.file
            .sections()
            .filter(|s| s.kind() == SectionKind::Text && s.size() > 0)
            .filter_map(|s| s.name().ok().map(str::to_owned))
            .filter(|n| n != ".text")
            .collect()
    }

    /// Why no entry section was found: one whose name cannot be read, else none at all.
    fn no_program(&self) -> ElfError {
        self.file
            .sections()
            .find(|s| s.kind() == SectionKind::Text && s.size() > 0 && s.name().is_err())
            .map_or(ElfError::NoProgram, |s| ElfError::UnreadableName {
                index: s.index().0,
            })
    }

    /// Loads the program in `section`, or the first entry section when `None`.
    pub fn program(&self, section: Option<&str>) -> Result<Program, ElfError> {
        let names = self.program_names();
        let name = match section {
            Some(s) if names.iter().any(|n| n == s) => s.to_owned(),
            Some(s) => {
                return Err(ElfError::NoSuchSection {
                    name: s.to_owned(),
                    available: names,
                })
            }
            None => names.first().cloned().ok_or_else(|| self.no_program())?,
        };
        let entry = self
            .file
            .section_by_name(&name)
            .ok_or(ElfError::NoProgram)?;
        let mut insns = section_bytes(&entry, &name)?;
        let text = self.file.section_by_name(".text").filter(|s| s.size() > 0);
        let text_bytes = match &text {
            Some(t) => section_bytes(t, ".text")?,
            None => Vec::new(),
        };
        let entry_len = insns.len() / INSN_SIZE;
        let mut uses_text = false;
        self.patch(
            &entry,
            &name,
            &mut insns,
            0,
            text.as_ref().map(|t| t.index()),
            entry_len,
            &text_bytes,
            &mut uses_text,
        )?;
        if uses_text {
            let mut text_insns = text_bytes.clone();
            let t = text.as_ref().expect("uses_text implies .text");
            let mut again = false;
            self.patch(
                t,
                ".text",
                &mut text_insns,
                entry_len,
                Some(t.index()),
                entry_len,
                &text_bytes,
                &mut again,
            )?;
            insns.extend_from_slice(&text_insns);
        }
        let source = self.source_map(
            &name,
            entry_len,
            uses_text.then_some(text_bytes.len() / INSN_SIZE),
        );
        let program = Program {
            name: name.trim_start_matches("naam/").to_owned(),
            insns,
            source,
        };
        // clang may place a shared tail before some of its predecessors, so a loop-free
        // program can still jump backwards; put its blocks in forward order. A program that
        // cannot be (a real loop, a call) is left as it is for the verifier to reject with
        // the precise reason.
        Ok(crate::relayout::forward_layout(&program).unwrap_or(program))
    }

    /// Loads every entry section.
    pub fn programs(&self) -> Result<Vec<Program>, ElfError> {
        let names = self.program_names();
        if names.is_empty() {
            return Err(self.no_program());
        }
        names.iter().map(|n| self.program(Some(n))).collect()
    }

    /// Applies the relocations of `section` to `insns`, which will sit at instruction `base` of
    /// the final program; `.text` is appended at `text_base`.
    #[allow(clippy::too_many_arguments)]
    fn patch(
        &self,
        section: &object::Section<'data, '_>,
        section_name: &str,
        insns: &mut [u8],
        base: usize,
        text_index: Option<object::SectionIndex>,
        text_base: usize,
        text_bytes: &[u8],
        uses_text: &mut bool,
    ) -> Result<(), ElfError> {
        for (offset, reloc) in section.relocations() {
            let insn = offset as usize / INSN_SIZE;
            let r_type = match reloc.flags() {
                RelocationFlags::Elf { r_type } => r_type,
                _ => 0,
            };
            let (symbol, sym_section, sym_value, defined) = match reloc.target() {
                RelocationTarget::Symbol(i) => {
                    let sym = self.file.symbol_by_index(i).map_err(ElfError::Parse)?;
                    let sec = sym.section_index();
                    let mut name = sym.name().unwrap_or("?").to_owned();
                    if name.is_empty() {
                        if let Some(s) = sec.and_then(|i| self.file.section_by_index(i).ok()) {
                            name = s.name().unwrap_or("?").to_owned();
                        }
                    }
                    (name, sec, sym.address(), !sym.is_undefined())
                }
                RelocationTarget::Section(i) => {
                    let name = self
                        .file
                        .section_by_index(i)
                        .ok()
                        .and_then(|s| s.name().ok().map(str::to_owned));
                    (name.unwrap_or_else(|| "?".into()), Some(i), 0, true)
                }
                _ => ("?".into(), None, 0, false),
            };
            let sect = || section_name.to_owned();
            if !defined {
                return Err(ElfError::Extern {
                    section: sect(),
                    insn,
                    symbol,
                });
            }
            let opcode = insns.get(insn * INSN_SIZE).copied();
            match r_type {
                R_BPF_64_64 if opcode == Some(OP_LDDW) => {
                    return Err(ElfError::GlobalData {
                        section: sect(),
                        insn,
                        symbol,
                    });
                }
                R_BPF_64_32 => {
                    let at = insn * INSN_SIZE;
                    let is_call = opcode == Some(OP_CALL) && insns[at + 1] >> 4 == PSEUDO_CALL;
                    if !is_call || sym_section.is_none() || sym_section != text_index {
                        return Err(ElfError::BadCall {
                            section: sect(),
                            insn,
                            symbol,
                        });
                    }
                    let imm =
                        i32::from_le_bytes(insns[at + 4..at + 8].try_into().expect("4 bytes"));
                    // libbpf's rule: target = symbol value / 8 + imm + 1, in .text instructions.
                    let target = (sym_value / INSN_SIZE as u64) as i64 + imm as i64 + 1;
                    let text_insns = text_bytes.len() / INSN_SIZE;
                    if target < 0 || target as usize >= text_insns {
                        return Err(ElfError::CallOutOfRange {
                            section: sect(),
                            insn,
                            target,
                            text_insns,
                        });
                    }
                    let from = (base + insn) as i64 + 1;
                    let new_imm = (text_base as i64 + target) - from;
                    insns[at + 4..at + 8].copy_from_slice(&(new_imm as i32).to_le_bytes());
                    *uses_text = true;
                }
                _ => {
                    return Err(ElfError::UnknownRelocation {
                        section: sect(),
                        insn,
                        r_type,
                        symbol,
                    })
                }
            }
        }
        Ok(())
    }
}

fn section_bytes(section: &object::Section<'_, '_>, name: &str) -> Result<Vec<u8>, ElfError> {
    let data = section.data().map_err(ElfError::Parse)?;
    if data.len() % INSN_SIZE != 0 {
        return Err(ElfError::BadSize {
            section: name.to_owned(),
            len: data.len(),
        });
    }
    Ok(data.to_vec())
}

impl ElfObject<'_> {
    /// The line information of the entry section (at instruction 0, `entry_len` long) and of
    /// `.text` when it was appended (`text_len` instructions after the entry).
    fn source_map(&self, entry: &str, entry_len: usize, text_len: Option<usize>) -> SourceMap {
        let data = |name: &str| {
            self.file
                .section_by_name(name)
                .and_then(|s| s.data().ok())
                .unwrap_or(&[])
        };
        let (btf, ext) = (data(".BTF"), data(".BTF.ext"));
        let mut map = SourceMap::default();
        if btf.is_empty() || ext.is_empty() {
            return map;
        }
        map.add_section(0, entry_len, crate::btf::section_lines(btf, ext, entry));
        if let Some(n) = text_len {
            map.add_section(entry_len, n, crate::btf::section_lines(btf, ext, ".text"));
        }
        map
    }
}

/// Loads one program from an object file's bytes.
pub fn load_program(bytes: &[u8], section: Option<&str>) -> Result<Program, ElfError> {
    ElfObject::parse(bytes)?.program(section)
}
