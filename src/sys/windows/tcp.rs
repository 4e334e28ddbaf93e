//! The TCP tables with owning pids (GetExtendedTcpTable), IPv4 and IPv6 listeners.

use windows_sys::Win32::NetworkManagement::IpHelper::{
    GetExtendedTcpTable, MIB_TCP6ROW_OWNER_PID, MIB_TCPROW_OWNER_PID, TCP_TABLE_OWNER_PID_LISTENER,
};
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6};

/// The raw table for one address family: a u32 count followed by rows.
fn table(family: u32) -> Vec<u8> {
    let mut size: u32 = 0;
    // SAFETY: first call with a null buffer only asks for the size.
    unsafe {
        GetExtendedTcpTable(
            std::ptr::null_mut(),
            &mut size,
            0,
            family,
            TCP_TABLE_OWNER_PID_LISTENER,
            0,
        );
    }
    for _ in 0..3 {
        let mut buf = vec![0u8; size as usize + 4096];
        let mut len = buf.len() as u32;
        // SAFETY: the buffer and its length match.
        let rc = unsafe {
            GetExtendedTcpTable(
                buf.as_mut_ptr().cast(),
                &mut len,
                0,
                family,
                TCP_TABLE_OWNER_PID_LISTENER,
                0,
            )
        };
        if rc == 0 {
            return buf;
        }
        size = len;
    }
    Vec::new()
}

/// Rows of type `R` in a table buffer.
fn rows<R: Copy>(buf: &[u8]) -> Vec<R> {
    if buf.len() < 4 {
        return Vec::new();
    }
    let count = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let offset = std::mem::align_of::<R>().max(4);
    (0..count)
        .filter_map(|i| {
            let start = offset + i * std::mem::size_of::<R>();
            let bytes = buf.get(start..start + std::mem::size_of::<R>())?;
            // SAFETY: `bytes` holds exactly one R; read_unaligned copes with alignment.
            Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<R>()) })
        })
        .collect()
}

fn local_port(raw: u32) -> u16 {
    u16::from_be((raw & 0xffff) as u16)
}

/// The owners, as `listener_pids` gives them (the OS answers in one call, or not at all).
pub fn listener_pids_checked(port: u16) -> std::io::Result<Vec<u32>> {
    Ok(listener_pids(port))
}

pub fn listener_pids(port: u16) -> Vec<u32> {
    let v4 = rows::<MIB_TCPROW_OWNER_PID>(&table(AF_INET as u32))
        .into_iter()
        .filter(|r| local_port(r.dwLocalPort) == port)
        .map(|r| r.dwOwningPid);
    let v6 = rows::<MIB_TCP6ROW_OWNER_PID>(&table(AF_INET6 as u32))
        .into_iter()
        .filter(|r| local_port(r.dwLocalPort) == port)
        .map(|r| r.dwOwningPid);
    v4.chain(v6).collect()
}
