//! Loading clang-built BPF ELF objects (`clang -O2 -g -target bpf -c prog.c -o prog.o`).
//!
//! Parsing (sections, symbols, BTF `.maps` and legacy `maps` definitions, global data
//! sections, relocations, BPF-to-BPF call linking) is done by the `aya-obj` crate; this module
//! turns its result into this crate's [`Map`]s and a verified [`Program`]:
//!
//! * programs are chosen by section: `xdp`, `xdp/...`, `xdp.frags` by default, any section
//!   (or program function name) with [`Object::program`]'s `section` argument;
//! * every map of the object becomes a [`Map`], numbered in the order of
//!   [`Object::map_names`]; `lddw` map relocations are rewritten to pseudo `MAP_FD` with
//!   that number (which [`Program::load`] takes as the map's index);
//! * `.data`, `.rodata` and `.bss` become one-entry array maps holding the section's initial
//!   contents, referenced with pseudo `MAP_VALUE` and the offset of the variable; `.rodata`
//!   is frozen for programs;
//! * calls to functions of the program's section or of `.text` are linked: the callees are
//!   appended to the program and the call's `imm` made pc-relative.
//!
//! Anything else is refused at load with a message naming what is missing: CO-RE (BTF field)
//! relocations, map types this runtime lacks, kernel function calls (by the verifier).

use std::collections::HashSet;
use std::sync::Arc;

use object::{Object as _, ObjectSection as _};
use thiserror::Error;

use crate::insn::RawInsn;
use crate::maps::{BPF_ANY, BPF_F_RDONLY_PROG, Map, MapDef, MapKind};
use crate::vm::{LoadError, Program};

/// Why an object or one of its programs could not be loaded.
#[derive(Debug, Error)]
pub enum ElfError {
    /// The file is not a BPF ELF object aya-obj can parse.
    #[error("cannot parse the BPF object: {0}")]
    Parse(String),
    /// No program matches.
    #[error("no program in section {wanted:?} (programs: {available})")]
    NoProgram {
        /// The section (or name) asked for; `xdp` by default.
        wanted: String,
        /// The programs of the object, as `section:name` pairs.
        available: String,
    },
    /// More than one program matches.
    #[error("{wanted:?} matches several programs ({matches}); choose one with --section")]
    Ambiguous {
        /// The section (or name) asked for.
        wanted: String,
        /// The matching programs, as `section:name` pairs.
        matches: String,
    },
    /// A feature of the object this runtime does not support.
    #[error("not supported: {0}")]
    Unsupported(String),
    /// A map definition this runtime refuses.
    #[error("map {name:?}: {why}")]
    Map {
        /// The map.
        name: String,
        /// Why.
        why: String,
    },
    /// Relocating map references or linking calls failed.
    #[error("relocation failed: {0}")]
    Relocation(String),
    /// The program was refused by [`Program::load`] (the verifier).
    #[error("program {name:?}: {source}")]
    Load {
        /// The program.
        name: String,
        /// The verifier's reason.
        #[source]
        source: LoadError,
    },
}

/// One program of an object, as found by the parser.
#[derive(Clone, Debug)]
pub struct ProgramInfo {
    /// The program's function name.
    pub name: String,
    /// The ELF section it is in.
    pub section: String,
}

/// A parsed BPF ELF object, from which programs are loaded with their maps.
pub struct Object {
    obj: aya_obj::Object,
    /// `.text` section indices (for call linking).
    text_sections: HashSet<usize>,
    /// Map names in index order.
    map_names: Vec<String>,
    /// Programs, in (section index, address) order.
    programs: Vec<(ProgramInfo, String)>,
}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Object")
            .field("programs", &self.programs())
            .field("maps", &self.map_names)
            .finish_non_exhaustive()
    }
}

impl Object {
    /// Parses an object file.
    pub fn parse(bytes: &[u8]) -> Result<Object, ElfError> {
        let elf = object::File::parse(bytes).map_err(|e| ElfError::Parse(e.to_string()))?;
        if elf.architecture() != object::Architecture::Bpf {
            return Err(ElfError::Parse(format!(
                "not a BPF object (architecture {:?})",
                elf.architecture()
            )));
        }
        let mut sections = Vec::new();
        let mut text_sections = HashSet::new();
        for s in elf.sections() {
            let i = s.index().0;
            if sections.len() <= i {
                sections.resize(i + 1, String::new());
            }
            let name = s.name().unwrap_or("").to_string();
            if name.starts_with(".text") {
                text_sections.insert(i);
            }
            sections[i] = name;
        }
        let patched = hide_xdp_suffixes(&elf, bytes);
        let obj = aya_obj::Object::parse(patched.as_deref().unwrap_or(bytes))
            .map_err(|e| ElfError::Parse(error_chain(&e)))?;
        let mut map_names: Vec<String> = obj.maps.keys().cloned().collect();
        map_names.sort_by_key(|n| {
            let m = &obj.maps[n];
            (m.section_index(), m.symbol_index(), n.clone())
        });
        let mut programs: Vec<(ProgramInfo, String, (usize, u64))> = obj
            .programs
            .iter()
            .map(|(name, p)| {
                let section = sections.get(p.section_index).cloned().unwrap_or_default();
                (
                    ProgramInfo {
                        name: name.clone(),
                        section,
                    },
                    name.clone(),
                    p.function_key(),
                )
            })
            .collect();
        programs.sort_by_key(|p| p.2);
        Ok(Object {
            obj,
            text_sections,
            map_names,
            programs: programs.into_iter().map(|(i, n, _)| (i, n)).collect(),
        })
    }

    /// The programs of the object.
    pub fn programs(&self) -> Vec<ProgramInfo> {
        self.programs.iter().map(|p| p.0.clone()).collect()
    }

    /// The names of the object's maps; a loaded program's map `i` is `map_names()[i]`.
    /// Global data maps are named after their sections (`.data`, `.rodata`, `.bss`).
    pub fn map_names(&self) -> &[String] {
        &self.map_names
    }

    /// Loads one program with fresh maps, per-CPU maps holding one CPU's values (see
    /// [`Object::program_with_cpus`] for more).
    ///
    /// `section` chooses the program by section name (or by function name); `None` takes the
    /// XDP program (`xdp`, `xdp/...`, `xdp.frags`), which must be the only one.
    pub fn program(&self, section: Option<&str>) -> Result<Program, ElfError> {
        self.program_with_cpus(section, 1)
    }

    /// [`Object::program`] with per-CPU maps sized for `ncpus` CPUs.
    pub fn program_with_cpus(
        &self,
        section: Option<&str>,
        ncpus: u32,
    ) -> Result<Program, ElfError> {
        let linked = self.link(section)?;
        let maps = linked
            .maps
            .iter()
            .map(|m| m.instantiate(ncpus).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Program::load(&linked.insns, maps).map_err(|source| ElfError::Load {
            name: linked.name.clone(),
            source,
        })
    }

    /// Relocates and links one program without loading it: its instructions (map references
    /// as pseudo `MAP_FD`/`MAP_VALUE` with the map's index in `imm`) and its maps' definitions
    /// and initial contents. For loaders other than [`Program::load`], such as the kernel's
    /// (the differential tests load the same instructions into both).
    pub fn link(&self, section: Option<&str>) -> Result<LinkedProgram, ElfError> {
        let (info, key) = self.find(section)?;
        if self.obj.has_btf_relocations() {
            return Err(ElfError::Unsupported(
                "CO-RE relocations (.BTF.ext field relocations, bpf_core_read)".into(),
            ));
        }
        let maps = self.map_specs()?;
        let mut obj = self.obj.clone();
        obj.relocate_maps(
            self.map_names
                .iter()
                .enumerate()
                .map(|(i, n)| (n.as_str(), i as i32, &self.obj.maps[n])),
            &self.text_sections,
        )
        .map_err(|e| ElfError::Relocation(error_chain(&e)))?;
        obj.relocate_calls(&self.text_sections)
            .map_err(|e| ElfError::Relocation(error_chain(&e)))?;
        let prog = &obj.programs[&key];
        let func = obj.functions.get(&prog.function_key()).ok_or_else(|| {
            ElfError::Relocation(format!("function of program {key:?} not found"))
        })?;
        let insns: Vec<RawInsn> = func
            .instructions
            .iter()
            .map(|i| RawInsn::new(i.code, i.dst_reg(), i.src_reg(), i.off, i.imm))
            .collect();
        Ok(LinkedProgram {
            name: info.name,
            insns,
            maps,
        })
    }

    fn find(&self, section: Option<&str>) -> Result<(ProgramInfo, String), ElfError> {
        let is_xdp = |s: &str| s == "xdp" || s.starts_with("xdp/") || s.starts_with("xdp.");
        let matches: Vec<&(ProgramInfo, String)> = self
            .programs
            .iter()
            .filter(|(p, _)| match section {
                None => is_xdp(&p.section),
                Some(s) => p.section == s,
            })
            .collect();
        let matches = if matches.is_empty()
            && let Some(s) = section
        {
            self.programs.iter().filter(|(p, _)| p.name == s).collect()
        } else {
            matches
        };
        let list = |v: &mut dyn Iterator<Item = &ProgramInfo>| {
            v.map(|p| format!("{}:{}", p.section, p.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let wanted = section.unwrap_or("xdp").to_string();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(ElfError::NoProgram {
                wanted,
                available: list(&mut self.programs.iter().map(|p| &p.0)),
            }),
            many => Err(ElfError::Ambiguous {
                wanted,
                matches: list(&mut many.iter().map(|p| &p.0)),
            }),
        }
    }

    fn map_specs(&self) -> Result<Vec<MapSpec>, ElfError> {
        use aya_obj::EbpfSectionKind as K;
        let mut out = Vec::with_capacity(self.map_names.len());
        for name in &self.map_names {
            let m = &self.obj.maps[name];
            let bad = |why: String| ElfError::Map {
                name: name.clone(),
                why,
            };
            let kind = MapKind::from_type(m.map_type()).ok_or_else(|| {
                bad(format!(
                    "map type {} is not supported (hash, array, percpu_hash, percpu_array, \
                     lru_hash are)",
                    m.map_type()
                ))
            })?;
            if m.inner().is_some() {
                return Err(bad("maps of maps are not supported".into()));
            }
            let data_section = matches!(m.section_kind(), K::Data | K::Rodata | K::Bss);
            let frozen = m.section_kind() == K::Rodata;
            out.push(MapSpec {
                def: MapDef {
                    name: name.clone(),
                    kind,
                    key_size: m.key_size(),
                    value_size: m.value_size(),
                    max_entries: m.max_entries(),
                    flags: if frozen {
                        m.map_flags() | BPF_F_RDONLY_PROG
                    } else {
                        m.map_flags()
                    },
                },
                initial: if data_section {
                    m.data().to_vec()
                } else {
                    Vec::new()
                },
                frozen,
            });
        }
        Ok(out)
    }
}

/// A relocated, linked program of an [`Object`], not yet loaded: see [`Object::link`].
#[derive(Clone, Debug)]
pub struct LinkedProgram {
    /// The program's function name.
    pub name: String,
    /// Its instructions, callees appended; `lddw` map references carry the map's index.
    pub insns: Vec<RawInsn>,
    /// Its maps, in index order.
    pub maps: Vec<MapSpec>,
}

/// One map of a [`LinkedProgram`].
#[derive(Clone, Debug)]
pub struct MapSpec {
    /// Its definition (`.rodata` has [`BPF_F_RDONLY_PROG`] set).
    pub def: MapDef,
    /// For global data (`.data`, `.rodata`; empty for `.bss` and ordinary maps): the value
    /// of key 0 at load.
    pub initial: Vec<u8>,
    /// Frozen after the initial value is written (`.rodata`): no userspace writes.
    pub frozen: bool,
}

impl MapSpec {
    /// Creates this crate's [`Map`] for the spec, per-CPU maps sized for `ncpus` CPUs.
    pub fn instantiate(&self, ncpus: u32) -> Result<Map, ElfError> {
        let bad = |why: String| ElfError::Map {
            name: self.def.name.clone(),
            why,
        };
        let map = Map::new(self.def.clone(), ncpus).map_err(|e| bad(e.to_string()))?;
        if !self.initial.is_empty() {
            map.update(&0u32.to_le_bytes(), &self.initial, BPF_ANY)
                .map_err(|e| bad(format!("initial contents: {e}")))?;
        }
        if self.frozen {
            map.freeze();
        }
        Ok(map)
    }
}

/// aya-obj 0.3 accepts `xdp/cpumap` and `xdp/devmap` but refuses other `xdp/NAME` sections,
/// which clang objects commonly use. For those, returns a copy of the object in which the
/// `/` of the section name in the section-name string table is replaced by a NUL, so that
/// aya-obj sees the section as `xdp` (or `xdp.frags`); [`Object`] keeps the real names,
/// read before. `None` when nothing needs patching.
fn hide_xdp_suffixes(elf: &object::File<'_>, bytes: &[u8]) -> Option<Vec<u8>> {
    use object::read::elf::{FileHeader as _, SectionHeader as _};
    let object::File::Elf64(elf) = elf else {
        return None;
    };
    let endian = elf.endian();
    let header = elf.elf_header();
    let table = header.sections(endian, bytes).ok()?;
    let headers = table.iter();
    let strtab = table
        .iter()
        .nth(header.shstrndx(endian, bytes).ok()? as usize)?;
    let (strtab_off, strtab_len) = strtab.file_range(endian)?;
    let mut out: Option<Vec<u8>> = None;
    for h in headers {
        let name_off = h.sh_name(endian) as u64;
        let Ok(name) = table.section_name(endian, h) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let prefix = ["xdp.frags/", "xdp/"]
            .into_iter()
            .find(|p| name.starts_with(p));
        let Some(prefix) = prefix else { continue };
        if matches!(&name[prefix.len()..], "cpumap" | "devmap") {
            continue;
        }
        let slash = name_off + prefix.len() as u64 - 1;
        if slash >= strtab_len {
            continue;
        }
        let out = out.get_or_insert_with(|| bytes.to_vec());
        out[(strtab_off + slash) as usize] = 0;
    }
    out
}

/// An error and its sources, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
