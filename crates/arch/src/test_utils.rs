//! Guest-memory helpers shared by the unit tests of every boot protocol.

use vm_memory::{ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::guest_memory_regions;

/// Guest memory laid out like the vmm does it.
pub fn guest_mem(mem_size: u64) -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&guest_memory_regions(mem_size)).unwrap()
}

/// Reads a `T` from guest memory.
pub fn read_obj<T: ByteValued>(mem: &GuestMemoryMmap, addr: u64) -> T {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

/// Reads a NUL-terminated string from guest memory.
pub fn read_cstr(mem: &GuestMemoryMmap, addr: u64) -> String {
    let mut out = Vec::new();
    for a in addr.. {
        let b: u8 = read_obj(mem, a);
        if b == 0 {
            break;
        }
        out.push(b);
    }
    String::from_utf8(out).unwrap()
}
