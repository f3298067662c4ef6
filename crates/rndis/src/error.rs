//! [`RndisError`]: why bytes are not a valid RNDIS message, packet, or NDIS object, or why
//! one cannot be written. Each variant names the offending values.

/// Why RNDIS input is invalid or output cannot be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RndisError {
    /// A range shorter than the 8-byte header.
    #[error("RNDIS range of {len} bytes is shorter than the 8-byte header")]
    RangeTooShort {
        /// Bytes in the range.
        len: usize,
    },
    /// `msg_len` below 8 or beyond the range.
    #[error("RNDIS message type {msg_type:#x} has msg_len {msg_len}, range holds {range}")]
    BadMessageLength {
        /// The message type.
        msg_type: u32,
        /// The `msg_len` field.
        msg_len: u32,
        /// Bytes in the range.
        range: usize,
    },
    /// A message shorter than its type's layout.
    #[error("RNDIS message type {msg_type:#x} of {msg_len} bytes, its layout needs {min}")]
    MessageTooShort {
        /// The message type.
        msg_type: u32,
        /// The message length.
        msg_len: usize,
        /// The layout's size, header included.
        min: usize,
    },
    /// A message of another type where a specific one was required.
    #[error("RNDIS message type {msg_type:#x} where {expected:#x} was required")]
    UnexpectedType {
        /// The type found.
        msg_type: u32,
        /// The type required.
        expected: u32,
    },
    /// An information/status buffer offset below the end of the fixed fields.
    #[error("RNDIS message type {msg_type:#x}: buffer offset {offset} below {min}")]
    InfoOffsetTooSmall {
        /// The message type.
        msg_type: u32,
        /// The offset field (from the body start).
        offset: u32,
        /// The smallest valid offset.
        min: u32,
    },
    /// An information/status buffer that does not lie inside the message (or range).
    #[error(
        "RNDIS message type {msg_type:#x}: buffer {offset}+{len} outside {available} body bytes"
    )]
    InfoOutOfBounds {
        /// The message type.
        msg_type: u32,
        /// The offset field (from the body start).
        offset: u32,
        /// The length field.
        len: u32,
        /// Body bytes available.
        available: usize,
    },
    /// PACKET data (the frame) outside the message.
    #[error("RNDIS packet data {offset}+{len} outside {available} body bytes")]
    DataOutOfBounds {
        /// `data_offset`.
        offset: u32,
        /// `data_len`.
        len: u32,
        /// Body bytes available.
        available: usize,
    },
    /// PACKET per-packet-info area outside the message or too small.
    #[error("RNDIS packet PPI area {offset}+{len} invalid for {available} body bytes")]
    PpiOutOfBounds {
        /// `ppi_offset`.
        offset: u32,
        /// `ppi_len`.
        len: u32,
        /// Body bytes available.
        available: usize,
    },
    /// A malformed per-packet-info entry: the walk stops and the packet is dropped.
    #[error("RNDIS PPI at {at}: size {size}, data offset {data_offset}, {remaining} bytes left")]
    BadPpi {
        /// Offset of the entry within the PPI area.
        at: usize,
        /// Its `size` field (0 if fewer than 12 bytes were left).
        size: u32,
        /// Its `ppi_offset` field.
        data_offset: u32,
        /// Bytes left in the PPI area.
        remaining: usize,
    },
    /// A PPI hvnet decodes whose data is shorter than its 4-byte datum.
    #[error("RNDIS PPI type {ppi_type:#x} at {at} has {len} data bytes, needs 4")]
    PpiDataTooShort {
        /// The PPI type word.
        ppi_type: u32,
        /// Offset of the entry within the PPI area.
        at: usize,
        /// Data bytes present.
        len: usize,
    },
    /// The output buffer is too small.
    #[error("{what} needs {needed} bytes, buffer has {available}")]
    BufferTooSmall {
        /// What was being written.
        what: &'static str,
        /// Bytes needed.
        needed: usize,
        /// Bytes in the buffer.
        available: usize,
    },
    /// A length that does not fit its u32/u16 field.
    #[error("{what} of {len} bytes does not fit its length field")]
    TooLong {
        /// What was being written.
        what: &'static str,
        /// The length.
        len: usize,
    },
    /// More messages in one send-buffer section than `max_pkt_per_msg` allows.
    #[error("more than {max} RNDIS messages in one batch")]
    TooManyMessages {
        /// The limit.
        max: u32,
    },
    /// An NDIS object shorter than its layout or its header's `size`.
    #[error("{object} of {len} bytes, needs {min}")]
    ObjectTooShort {
        /// The object's name.
        object: &'static str,
        /// Bytes available.
        len: usize,
        /// Bytes needed.
        min: usize,
    },
    /// An NDIS object header that is not acceptable.
    #[error("{object} header: type {object_type:#x}, revision {revision}, size {size}")]
    BadObjectHeader {
        /// The object's name.
        object: &'static str,
        /// Header `type`.
        object_type: u8,
        /// Header `revision`.
        revision: u8,
        /// Header `size`.
        size: u16,
    },
    /// RSS parameters with a hash function other than Toeplitz.
    #[error("RSS hash function {function} is not Toeplitz")]
    RssHashFunction {
        /// `hash_info & 0xFF`.
        function: u32,
    },
    /// RSS parameters with a key size other than 40.
    #[error("RSS key size {size}, expected 40")]
    RssKeySize {
        /// `key_size`.
        size: u16,
    },
    /// RSS parameters with a table size that is 0, not a multiple of 4, or above 512.
    #[error("RSS table size {size} bytes")]
    RssTableSize {
        /// `table_size` (bytes).
        size: u16,
    },
    /// The RSS table or key outside the object.
    #[error("RSS {what} at {offset}, {len} bytes, outside {available}")]
    RssOutOfBounds {
        /// "table" or "key".
        what: &'static str,
        /// Its offset.
        offset: u32,
        /// Its size.
        len: usize,
        /// Bytes in the object.
        available: usize,
    },
    /// An RSS table entry naming a queue that does not exist.
    #[error("RSS table entry {index} = {entry}, only {queues} queues")]
    RssEntryOutOfRange {
        /// Entry index.
        index: usize,
        /// Its value.
        entry: u32,
        /// Queues available.
        queues: u32,
    },
    /// A configuration parameter's name or value outside its data.
    #[error("config parameter {what} at {offset}, {len} bytes, outside {available}")]
    ConfigParamOutOfBounds {
        /// "name" or "value".
        what: &'static str,
        /// Its offset.
        offset: u32,
        /// Its length.
        len: u32,
        /// Bytes in the data.
        available: usize,
    },
    /// A configuration parameter other than a "NetworkAddress" string.
    #[error("config parameter is not a NetworkAddress string (type {param_type})")]
    NotNetworkAddress {
        /// The parameter's type.
        param_type: u32,
    },
    /// A MAC string that is not 12 hex digits.
    #[error("MAC string of {len} bytes is not 12 UTF-16 hex digits")]
    BadMacString {
        /// Value length in bytes.
        len: u32,
    },
}
