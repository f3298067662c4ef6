//! BPF maps: array, per-CPU array, hash, per-CPU hash and LRU hash.
//!
//! Values live in 8-byte-aligned words of [`AtomicU64`], so that programs running on several
//! channels at once can share a map and its atomic instructions are real atomics; plain loads
//! and stores are relaxed accesses (as on the kernel, where they are ordinary memory
//! accesses). Hash maps preallocate their `max_entries` value slots like the kernel's default
//! (non-`BPF_F_NO_PREALLOC`) hash maps, so that a pointer a program obtained from a lookup
//! always points at map memory, even after the element is deleted.
//!
//! Each value is stored rounded up to 8 bytes. Userspace-side per-CPU values are the
//! concatenation of one such rounded value per CPU, as with `bpf(2)`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use thiserror::Error;

/// `BPF_ANY`: create or update.
pub const BPF_ANY: u64 = 0;
/// `BPF_NOEXIST`: create only.
pub const BPF_NOEXIST: u64 = 1;
/// `BPF_EXIST`: update only.
pub const BPF_EXIST: u64 = 2;
/// `BPF_F_RDONLY_PROG` map flag: programs may read but not write the values.
pub const BPF_F_RDONLY_PROG: u32 = 1 << 7;

/// Largest number of value copies (entries, times CPUs for per-CPU maps) of one map; the
/// pointer encoding of the interpreter has 22 bits for it.
pub const MAX_VALUE_SLOTS: u64 = 1 << 22;
/// Largest value size (the interpreter's pointer offsets are 32 bits; this is far below).
pub const MAX_VALUE_SIZE: u32 = 1 << 20;

/// errno values returned (negated) by map helpers.
pub mod errno {
    /// Operation not permitted.
    pub const EPERM: i64 = 1;
    /// No such entry.
    pub const ENOENT: i64 = 2;
    /// Too big / full.
    pub const E2BIG: i64 = 7;
    /// Permission denied.
    pub const EACCES: i64 = 13;
    /// Entry exists.
    pub const EEXIST: i64 = 17;
    /// Invalid argument.
    pub const EINVAL: i64 = 22;
    /// Not supported (kernel-internal `ENOTSUPP`).
    pub const ENOTSUPP: i64 = 524;
}

/// Map types (values are the kernel's `enum bpf_map_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MapKind {
    /// `BPF_MAP_TYPE_HASH` (1).
    Hash,
    /// `BPF_MAP_TYPE_ARRAY` (2).
    Array,
    /// `BPF_MAP_TYPE_PERCPU_HASH` (5).
    PerCpuHash,
    /// `BPF_MAP_TYPE_PERCPU_ARRAY` (6).
    PerCpuArray,
    /// `BPF_MAP_TYPE_LRU_HASH` (9).
    LruHash,
}

impl MapKind {
    /// From the kernel's map type number.
    pub fn from_type(t: u32) -> Option<MapKind> {
        Some(match t {
            1 => MapKind::Hash,
            2 => MapKind::Array,
            5 => MapKind::PerCpuHash,
            6 => MapKind::PerCpuArray,
            9 => MapKind::LruHash,
            _ => return None,
        })
    }

    /// The kernel's map type number (the inverse of [`MapKind::from_type`]).
    pub fn to_type(self) -> u32 {
        match self {
            MapKind::Hash => 1,
            MapKind::Array => 2,
            MapKind::PerCpuHash => 5,
            MapKind::PerCpuArray => 6,
            MapKind::LruHash => 9,
        }
    }

    /// Whether each entry has one value per CPU.
    pub fn per_cpu(self) -> bool {
        matches!(self, MapKind::PerCpuArray | MapKind::PerCpuHash)
    }

    /// Whether the map is an array (keys are u32 indices, entries always exist).
    pub fn is_array(self) -> bool {
        matches!(self, MapKind::Array | MapKind::PerCpuArray)
    }
}

/// A map's definition (as found in an object's `.maps` or `maps` section).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapDef {
    /// Name (for messages and the control plane).
    pub name: String,
    /// Type.
    pub kind: MapKind,
    /// Key size in bytes (4 for arrays).
    pub key_size: u32,
    /// Value size in bytes.
    pub value_size: u32,
    /// Capacity.
    pub max_entries: u32,
    /// `map_flags` (only [`BPF_F_RDONLY_PROG`] is interpreted).
    pub flags: u32,
}

/// Errors of map creation and of the userspace-side map API.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum MapError {
    /// The definition is not acceptable.
    #[error("map `{name}`: {why}")]
    BadDef {
        /// Map name.
        name: String,
        /// Reason.
        why: &'static str,
    },
    /// The key has the wrong size.
    #[error("key of {got} bytes, map expects {want}")]
    KeySize {
        /// Given.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// The value has the wrong size.
    #[error("value of {got} bytes, map expects {want}")]
    ValueSize {
        /// Given.
        got: usize,
        /// Expected.
        want: usize,
    },
    /// The operation failed with a kernel errno (`ENOENT`, `EEXIST`, `E2BIG`, `EINVAL`).
    #[error("map operation failed with errno {0}")]
    Errno(i64),
}

/// Value storage: `slots` values of `value_size` bytes, each on an 8-byte-aligned stride.
#[derive(Debug)]
pub(crate) struct Values {
    words: Box<[AtomicU64]>,
    stride: usize,
}

impl Values {
    fn new(slots: usize, value_size: usize) -> Values {
        let stride = value_size.div_ceil(8);
        Values {
            words: (0..slots * stride).map(|_| AtomicU64::new(0)).collect(),
            stride,
        }
    }

    fn slots(&self) -> usize {
        self.words.len().checked_div(self.stride).unwrap_or(0)
    }

    fn byte(&self, slot: usize, off: usize) -> u8 {
        let w = &self.words[slot * self.stride + off / 8];
        (w.load(Ordering::Relaxed) >> ((off % 8) * 8)) as u8
    }

    fn set_byte(&self, slot: usize, off: usize, b: u8) {
        let w = &self.words[slot * self.stride + off / 8];
        let shift = (off % 8) * 8;
        let _ = w.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some((v & !(0xff << shift)) | (u64::from(b) << shift))
        });
    }

    /// Reads `size` (1..=8) bytes at `off` as a little-endian number. Bounds are the caller's.
    pub(crate) fn read(&self, slot: usize, off: usize, size: usize) -> u64 {
        if off % 8 + size <= 8 {
            let w = self.words[slot * self.stride + off / 8].load(Ordering::Relaxed);
            let v = w >> ((off % 8) * 8);
            if size == 8 {
                v
            } else {
                v & ((1 << (size * 8)) - 1)
            }
        } else {
            (0..size).fold(0, |acc, i| {
                acc | (u64::from(self.byte(slot, off + i)) << (i * 8))
            })
        }
    }

    /// Writes the low `size` bytes of `val` at `off`.
    pub(crate) fn write(&self, slot: usize, off: usize, size: usize, val: u64) {
        if off.is_multiple_of(8) && size == 8 {
            self.words[slot * self.stride + off / 8].store(val, Ordering::Relaxed);
        } else if off % 8 + size <= 8 {
            let shift = (off % 8) * 8;
            let mask = if size == 8 {
                u64::MAX
            } else {
                ((1u64 << (size * 8)) - 1) << shift
            };
            let _ = self.words[slot * self.stride + off / 8].fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |v| Some((v & !mask) | ((val << shift) & mask)),
            );
        } else {
            for i in 0..size {
                self.set_byte(slot, off + i, (val >> (i * 8)) as u8);
            }
        }
    }

    /// Atomic read-modify-write of the naturally aligned 4- or 8-byte value at `off`; `f`
    /// maps the old value to `Some(new)` or `None` (no store). Returns the old value.
    pub(crate) fn rmw(
        &self,
        slot: usize,
        off: usize,
        size: usize,
        f: impl Fn(u64) -> Option<u64>,
    ) -> u64 {
        let w = &self.words[slot * self.stride + off / 8];
        let shift = (off % 8) * 8;
        let mask = if size == 8 {
            u64::MAX
        } else {
            ((1u64 << (size * 8)) - 1) << shift
        };
        let old = match w.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
            let cur = (v & mask) >> shift;
            f(cur).map(|n| (v & !mask) | ((n << shift) & mask))
        }) {
            Ok(v) | Err(v) => v,
        };
        (old & mask) >> shift
    }

    pub(crate) fn read_bytes(&self, slot: usize, out: &mut [u8]) {
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(slot, i);
        }
    }

    pub(crate) fn write_bytes(&self, slot: usize, data: &[u8]) {
        for (i, chunk) in data.chunks(8).enumerate() {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            if chunk.len() == 8 {
                self.words[slot * self.stride + i].store(u64::from_le_bytes(w), Ordering::Relaxed);
            } else {
                self.write(slot, i * 8, chunk.len(), u64::from_le_bytes(w));
            }
        }
    }

    fn zero(&self, slot: usize) {
        for w in &self.words[slot * self.stride..(slot + 1) * self.stride] {
            w.store(0, Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct HashState {
    index: HashMap<Box<[u8]>, u32>,
    keys: Vec<Option<Box<[u8]>>>,
    free: Vec<u32>,
    /// LRU maps: entries in use, most recently used first, as a list linked through
    /// entry indices, so that a use and an eviction are O(1) (a scan for the oldest entry
    /// made every insert into a full map cost its size).
    lru: Option<LruList>,
}

/// A doubly linked list over entry indices.
#[derive(Debug)]
struct LruList {
    prev: Vec<u32>,
    next: Vec<u32>,
    head: u32,
    tail: u32,
}

const NIL: u32 = u32::MAX;

impl LruList {
    fn new(n: usize) -> LruList {
        LruList {
            prev: vec![NIL; n],
            next: vec![NIL; n],
            head: NIL,
            tail: NIL,
        }
    }

    fn unlink(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        match p {
            NIL => {
                if self.head == e {
                    self.head = n;
                }
            }
            p => self.next[p as usize] = n,
        }
        match n {
            NIL => {
                if self.tail == e {
                    self.tail = p;
                }
            }
            n => self.prev[n as usize] = p,
        }
        self.prev[e as usize] = NIL;
        self.next[e as usize] = NIL;
    }

    fn push_front(&mut self, e: u32) {
        self.prev[e as usize] = NIL;
        self.next[e as usize] = self.head;
        if self.head != NIL {
            self.prev[self.head as usize] = e;
        }
        self.head = e;
        if self.tail == NIL {
            self.tail = e;
        }
    }

    /// Marks `e` (in the list) most recently used.
    fn touch(&mut self, e: u32) {
        if self.head != e {
            self.unlink(e);
            self.push_front(e);
        }
    }
}

/// A map instance, shared between the programs that use it and the control plane.
#[derive(Debug)]
pub struct Map {
    def: MapDef,
    ncpus: u32,
    values: Values,
    hash: Option<Mutex<HashState>>,
    frozen: AtomicBool,
}

impl Map {
    /// Creates a map with every value zeroed; per-CPU maps get `ncpus` copies of each value.
    pub fn new(def: MapDef, ncpus: u32) -> Result<Map, MapError> {
        let bad = |why| {
            Err(MapError::BadDef {
                name: def.name.clone(),
                why,
            })
        };
        if def.value_size == 0 || def.value_size > MAX_VALUE_SIZE {
            return bad("value size must be 1..=1 MiB");
        }
        if def.max_entries == 0 {
            return bad("max_entries must not be 0");
        }
        if ncpus == 0 {
            return bad("at least one CPU");
        }
        if def.kind.is_array() {
            if def.key_size != 4 {
                return bad("array keys are 4 bytes");
            }
        } else if def.key_size == 0 || def.key_size > 512 {
            return bad("hash key size must be 1..=512");
        }
        let copies = if def.kind.per_cpu() { ncpus } else { 1 };
        let slots = u64::from(def.max_entries) * u64::from(copies);
        if slots > MAX_VALUE_SLOTS {
            return bad("too many entries (entries x CPUs above 4 M)");
        }
        let hash = (!def.kind.is_array()).then(|| {
            Mutex::new(HashState {
                keys: vec![None; def.max_entries as usize],
                free: (0..def.max_entries).rev().collect(),
                lru: (def.kind == MapKind::LruHash).then(|| LruList::new(def.max_entries as usize)),
                ..HashState::default()
            })
        });
        Ok(Map {
            values: Values::new(slots as usize, def.value_size as usize),
            def,
            ncpus,
            hash,
            frozen: AtomicBool::new(false),
        })
    }

    /// The definition.
    pub fn def(&self) -> &MapDef {
        &self.def
    }

    /// Number of CPUs per-CPU values are kept for.
    pub fn ncpus(&self) -> u32 {
        self.ncpus
    }

    /// Freezes the map for programs (like `BPF_MAP_FREEZE` on a `BPF_F_RDONLY_PROG` map):
    /// afterwards program stores to its values fault and program updates fail with `EPERM`.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::Relaxed);
    }

    /// Whether programs may write the values.
    pub fn writable_by_program(&self) -> bool {
        self.def.flags & BPF_F_RDONLY_PROG == 0 && !self.frozen.load(Ordering::Relaxed)
    }

    pub(crate) fn values(&self) -> &Values {
        &self.values
    }

    fn copies(&self) -> u32 {
        if self.def.kind.per_cpu() {
            self.ncpus
        } else {
            1
        }
    }

    fn slot_of(&self, entry: u32, cpu: u32) -> usize {
        (entry as usize) * self.copies() as usize + (cpu % self.copies()) as usize
    }

    fn array_index(&self, key: &[u8]) -> Option<u32> {
        let i = u32::from_le_bytes(key.try_into().ok()?);
        (i < self.def.max_entries).then_some(i)
    }

    /// Finds the entry for `key`; for LRU maps marks it used.
    fn find(&self, key: &[u8]) -> Option<u32> {
        match &self.hash {
            None => self.array_index(key),
            Some(h) => {
                let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
                let e = *h.index.get(key)?;
                if let Some(l) = &mut h.lru {
                    l.touch(e);
                }
                Some(e)
            }
        }
    }

    /// Program-side lookup: the value slot for `key` on `cpu`.
    pub(crate) fn prog_lookup(&self, key: &[u8], cpu: u32) -> Option<usize> {
        self.find(key).map(|e| self.slot_of(e, cpu))
    }

    /// Inserts or finds the entry for `key` under `flags`; returns (entry, newly created).
    fn upsert(&self, key: &[u8], flags: u64) -> Result<(u32, bool), i64> {
        if flags > BPF_EXIST {
            return Err(-errno::EINVAL);
        }
        let Some(h) = &self.hash else {
            let Some(i) = self.array_index(key) else {
                return Err(-errno::E2BIG);
            };
            if flags == BPF_NOEXIST {
                return Err(-errno::EEXIST);
            }
            return Ok((i, false));
        };
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&e) = h.index.get(key) {
            if flags == BPF_NOEXIST {
                return Err(-errno::EEXIST);
            }
            if let Some(l) = &mut h.lru {
                l.touch(e);
            }
            return Ok((e, false));
        }
        if flags == BPF_EXIST {
            return Err(-errno::ENOENT);
        }
        let e = match h.free.pop() {
            Some(e) => e,
            None if h.lru.is_some() => {
                let victim = h.lru.as_ref().map_or(NIL, |l| l.tail);
                if victim == NIL {
                    return Err(-errno::E2BIG);
                }
                if let Some(l) = &mut h.lru {
                    l.unlink(victim);
                }
                if let Some(k) = h.keys[victim as usize].take() {
                    h.index.remove(&k);
                }
                victim
            }
            None => return Err(-errno::E2BIG),
        };
        let k: Box<[u8]> = key.into();
        h.keys[e as usize] = Some(k.clone());
        h.index.insert(k, e);
        if let Some(l) = &mut h.lru {
            l.push_front(e);
        }
        Ok((e, true))
    }

    /// Program-side update (value for `cpu` only; a new per-CPU entry has the other CPUs'
    /// values zeroed). Returns 0 or a negative errno.
    pub(crate) fn prog_update(&self, key: &[u8], value: &[u8], flags: u64, cpu: u32) -> i64 {
        if !self.writable_by_program() {
            return -errno::EPERM;
        }
        match self.upsert(key, flags) {
            Err(e) => e,
            Ok((e, created)) => {
                if created && self.def.kind.per_cpu() {
                    for c in 0..self.ncpus {
                        self.values.zero(self.slot_of(e, c));
                    }
                }
                self.values.write_bytes(self.slot_of(e, cpu), value);
                0
            }
        }
    }

    /// Program-side delete. Returns 0 or a negative errno.
    pub(crate) fn prog_delete(&self, key: &[u8]) -> i64 {
        if !self.writable_by_program() {
            return -errno::EPERM;
        }
        match self.remove(key) {
            Ok(()) => 0,
            Err(MapError::Errno(e)) => -e,
            Err(_) => -errno::EINVAL,
        }
    }

    fn remove(&self, key: &[u8]) -> Result<(), MapError> {
        let Some(h) = &self.hash else {
            return Err(MapError::Errno(errno::EINVAL));
        };
        let mut h = h.lock().unwrap_or_else(|e| e.into_inner());
        let e = h.index.remove(key).ok_or(MapError::Errno(errno::ENOENT))?;
        h.keys[e as usize] = None;
        if let Some(l) = &mut h.lru {
            l.unlink(e);
        }
        h.free.push(e);
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), MapError> {
        if key.len() != self.def.key_size as usize {
            return Err(MapError::KeySize {
                got: key.len(),
                want: self.def.key_size as usize,
            });
        }
        Ok(())
    }

    /// Size of a userspace value: `value_size`, or `ncpus` values of `value_size` rounded up
    /// to 8 for per-CPU maps.
    pub fn user_value_size(&self) -> usize {
        if self.def.kind.per_cpu() {
            (self.def.value_size as usize).div_ceil(8) * 8 * self.ncpus as usize
        } else {
            self.def.value_size as usize
        }
    }

    /// Userspace lookup (does not count as a use for LRU). Per-CPU maps return all CPUs'
    /// values, each padded to 8 bytes.
    pub fn lookup(&self, key: &[u8]) -> Result<Vec<u8>, MapError> {
        self.check_key(key)?;
        let entry = match &self.hash {
            None => self.array_index(key),
            Some(h) => h
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .index
                .get(key)
                .copied(),
        }
        .ok_or(MapError::Errno(errno::ENOENT))?;
        let vs = self.def.value_size as usize;
        let mut out = vec![0u8; self.user_value_size()];
        if self.def.kind.per_cpu() {
            let step = vs.div_ceil(8) * 8;
            for c in 0..self.ncpus {
                let at = c as usize * step;
                self.values
                    .read_bytes(self.slot_of(entry, c), &mut out[at..at + vs]);
            }
        } else {
            self.values.read_bytes(self.slot_of(entry, 0), &mut out);
        }
        Ok(out)
    }

    /// Userspace update with `BPF_ANY`/`BPF_NOEXIST`/`BPF_EXIST` semantics; per-CPU maps take
    /// all CPUs' values (see [`Map::user_value_size`]).
    pub fn update(&self, key: &[u8], value: &[u8], flags: u64) -> Result<(), MapError> {
        self.check_key(key)?;
        if value.len() != self.user_value_size() {
            return Err(MapError::ValueSize {
                got: value.len(),
                want: self.user_value_size(),
            });
        }
        let (entry, _) = self.upsert(key, flags).map_err(|e| MapError::Errno(-e))?;
        let vs = self.def.value_size as usize;
        if self.def.kind.per_cpu() {
            let step = vs.div_ceil(8) * 8;
            for c in 0..self.ncpus {
                let at = c as usize * step;
                self.values
                    .write_bytes(self.slot_of(entry, c), &value[at..at + vs]);
            }
        } else {
            self.values.write_bytes(self.slot_of(entry, 0), value);
        }
        Ok(())
    }

    /// Userspace delete (`EINVAL` on arrays, `ENOENT` if absent).
    pub fn delete(&self, key: &[u8]) -> Result<(), MapError> {
        self.check_key(key)?;
        self.remove(key)
    }

    /// Keys present (arrays: every index), in no particular order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        match &self.hash {
            None => (0..self.def.max_entries)
                .map(|i| i.to_le_bytes().to_vec())
                .collect(),
            Some(h) => h
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .index
                .keys()
                .map(|k| k.to_vec())
                .collect(),
        }
    }

    /// Number of value slots (entries times CPUs for per-CPU maps).
    pub(crate) fn slots(&self) -> usize {
        self.values.slots()
    }
}

#[cfg(test)]
mod lru_tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum LruOp {
        Update(u8),
        Use(u8),
        Delete(u8),
    }

    fn op() -> impl Strategy<Value = LruOp> {
        prop_oneof![
            (0u8..12).prop_map(LruOp::Update),
            (0u8..12).prop_map(LruOp::Use),
            (0u8..12).prop_map(LruOp::Delete),
        ]
    }

    proptest! {
        /// The linked list evicts exactly what a plain most-recent-first list would.
        #[test]
        fn lru_matches_a_recency_list(ops in prop::collection::vec(op(), 1..200)) {
            const CAP: usize = 5;
            let m = Map::new(
                MapDef {
                    name: "lru".into(),
                    kind: MapKind::LruHash,
                    key_size: 1,
                    value_size: 1,
                    max_entries: CAP as u32,
                    flags: 0,
                },
                1,
            )
            .unwrap();
            let mut model: Vec<u8> = Vec::new(); // most recent first
            for op in ops {
                match op {
                    LruOp::Update(k) => {
                        prop_assert_eq!(m.prog_update(&[k], &[k], BPF_ANY, 0), 0);
                        model.retain(|&x| x != k);
                        if model.len() == CAP {
                            model.pop();
                        }
                        model.insert(0, k);
                    }
                    LruOp::Use(k) => {
                        let found = m.prog_lookup(&[k], 0).is_some();
                        prop_assert_eq!(found, model.contains(&k));
                        if found {
                            model.retain(|&x| x != k);
                            model.insert(0, k);
                        }
                    }
                    LruOp::Delete(k) => {
                        let r = m.prog_delete(&[k]);
                        prop_assert_eq!(r == 0, model.contains(&k));
                        model.retain(|&x| x != k);
                    }
                }
                let mut keys: Vec<u8> = m.keys().into_iter().map(|k| k[0]).collect();
                keys.sort_unstable();
                let mut want = model.clone();
                want.sort_unstable();
                prop_assert_eq!(keys, want);
            }
        }
    }
}
