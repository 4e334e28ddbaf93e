//! Named pipes only this user can open: devrun's control channel, and the channel a warm spare
//! interpreter connects back to. Each instance gets a security descriptor whose DACL grants the
//! user devrun runs as (the SID read from devrun's process token) and no one else, and rejects
//! remote clients.

use std::io;
use std::os::windows::io::AsRawHandle;
use std::ptr::null_mut;
use tokio::net::windows::named_pipe::{NamedPipeServer, ServerOptions};
use windows_sys::Win32::Foundation::{CloseHandle, LocalFree, HANDLE};
use windows_sys::Win32::Security::Authorization::{
    ConvertSidToStringSidW, ConvertStringSecurityDescriptorToSecurityDescriptorW, SDDL_REVISION_1,
};
use windows_sys::Win32::Security::{
    GetTokenInformation, TokenUser, PSECURITY_DESCRIPTOR, SECURITY_ATTRIBUTES, TOKEN_QUERY,
    TOKEN_USER,
};
use windows_sys::Win32::System::Pipes::GetNamedPipeClientProcessId;
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// The process at the other end of a connected instance.
pub fn pipe_client_pid(instance: &NamedPipeServer) -> Option<u32> {
    let mut pid = 0u32;
    // SAFETY: the handle is the live instance's; the pid is plain data.
    let ok = unsafe { GetNamedPipeClientProcessId(instance.as_raw_handle() as HANDLE, &mut pid) };
    (ok != 0).then_some(pid)
}

/// A security descriptor whose DACL grants this user (and no one else) access.
pub struct OwnerOnly {
    descriptor: PSECURITY_DESCRIPTOR,
}

// SAFETY: the descriptor is written once, by `new`, and only read afterwards (by
// CreateNamedPipeW); it is freed once, on drop.
unsafe impl Send for OwnerOnly {}
unsafe impl Sync for OwnerOnly {}

impl OwnerOnly {
    pub fn new() -> io::Result<OwnerOnly> {
        let sid = current_user_sid()
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read this user's SID: {e}")))?;
        // D:P — a protected DACL (nothing inherited); one entry: allow everything to this SID.
        let sddl: Vec<u16> = format!("D:P(A;;GA;;;{sid})")
            .encode_utf16()
            .chain(Some(0))
            .collect();
        let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: the string is NUL-terminated; the descriptor is ours to free (LocalFree).
        let ok = unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut descriptor,
                null_mut(),
            )
        };
        if ok == 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("cannot build the pipe's owner-only security descriptor: {e}"),
            ));
        }
        Ok(OwnerOnly { descriptor })
    }

    /// An instance of the pipe `name` with this descriptor; `first`: it must be the first.
    pub fn create(&self, name: &str, first: bool) -> io::Result<NamedPipeServer> {
        let mut attributes = SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.descriptor,
            bInheritHandle: 0,
        };
        let mut options = ServerOptions::new();
        options
            .first_pipe_instance(first)
            .reject_remote_clients(true);
        // SAFETY: the attributes are valid for the call and point at our live descriptor.
        unsafe {
            options.create_with_security_attributes_raw(
                name,
                (&mut attributes as *mut SECURITY_ATTRIBUTES).cast(),
            )
        }
    }
}

impl Drop for OwnerOnly {
    fn drop(&mut self) {
        // SAFETY: allocated by ConvertStringSecurityDescriptorToSecurityDescriptorW, freed once.
        unsafe { LocalFree(self.descriptor) };
    }
}

/// The SID of the user devrun runs as (`S-1-5-21-…`), from its process token.
fn current_user_sid() -> io::Result<String> {
    // SAFETY: every handle and buffer is checked, sized by the OS and released once; the
    // TOKEN_USER is read from a buffer the OS filled, aligned for it (u64s).
    unsafe {
        let mut token: HANDLE = null_mut();
        if OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut token) == 0 {
            return Err(io::Error::last_os_error());
        }
        let mut len = 0u32;
        GetTokenInformation(token, TokenUser, null_mut(), 0, &mut len);
        let mut buffer = vec![0u64; (len as usize).div_ceil(8).max(1)];
        let ok = GetTokenInformation(token, TokenUser, buffer.as_mut_ptr().cast(), len, &mut len);
        let read = io::Error::last_os_error();
        CloseHandle(token);
        if ok == 0 {
            return Err(read);
        }
        let user = &*(buffer.as_ptr() as *const TOKEN_USER);
        let mut text = null_mut();
        if ConvertSidToStringSidW(user.User.Sid, &mut text) == 0 {
            return Err(io::Error::last_os_error());
        }
        let len = (0..).take_while(|&i| *text.add(i) != 0).count();
        let sid = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
        LocalFree(text.cast());
        Ok(sid)
    }
}

/// Run by `cargo test` on Windows; tests-wine/run skips those named `real_windows_` (Wine does
/// not enforce them) and lists them as "needs real Windows".
#[cfg(test)]
mod windows_tests {
    use super::*;

    /// A pipe of devrun's name made by someone else first (a squatter) is never shared:
    /// devrun's first instance fails instead of joining it. Wine 8 ignores
    /// FILE_FLAG_FIRST_PIPE_INSTANCE.
    #[tokio::test]
    async fn real_windows_a_pipe_name_taken_first_fails_the_create() {
        let name = format!(r"\\.\pipe\devrun-{}", crate::state::random_id().unwrap());
        let squatter = ServerOptions::new().create(&name).unwrap();
        let security = OwnerOnly::new().unwrap();
        match security.create(&name, true) {
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
            Ok(_) => panic!("devrun's first instance joined a pipe someone else made"),
        }
        drop(squatter);
        security.create(&name, true).unwrap();
    }

    /// The DACL the pipe really has, as SDDL (read back from the OS through the handle).
    fn dacl_of(pipe: &NamedPipeServer) -> String {
        use windows_sys::Win32::Security::Authorization::{
            ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo, SE_KERNEL_OBJECT,
        };
        use windows_sys::Win32::Security::DACL_SECURITY_INFORMATION;
        // SAFETY: test code; every out-pointer is ours and what the OS allocates is freed.
        unsafe {
            let mut descriptor: PSECURITY_DESCRIPTOR = null_mut();
            let handle = pipe.as_raw_handle() as HANDLE;
            let dacl = DACL_SECURITY_INFORMATION;
            let status = GetSecurityInfo(
                handle,
                SE_KERNEL_OBJECT,
                dacl,
                null_mut(),
                null_mut(),
                null_mut(),
                null_mut(),
                &mut descriptor,
            );
            assert_eq!(status, 0, "GetSecurityInfo");
            let (mut text, mut len) = (null_mut(), 0u32);
            let ok = ConvertSecurityDescriptorToStringSecurityDescriptorW(
                descriptor,
                SDDL_REVISION_1,
                dacl,
                &mut text,
                &mut len,
            );
            assert_ne!(ok, 0, "{}", io::Error::last_os_error());
            let len = (0..).take_while(|&i| *text.add(i) != 0).count();
            let sddl = String::from_utf16_lossy(std::slice::from_raw_parts(text, len));
            LocalFree(text.cast());
            LocalFree(descriptor);
            sddl
        }
    }

    /// The pipe's DACL names this user alone: one allow entry, for the SID of devrun's token,
    /// nothing inherited. (Wine stores it but does not enforce it: another user refused by it
    /// needs real Windows.)
    #[tokio::test]
    async fn windows_the_pipe_grants_this_user_alone() {
        let name = format!(r"\\.\pipe\devrun-{}", crate::state::random_id().unwrap());
        let pipe = OwnerOnly::new().unwrap().create(&name, true).unwrap();
        let sid = current_user_sid().unwrap();
        assert!(sid.starts_with("S-1-5-"), "{sid}");
        let sddl = dacl_of(&pipe);
        assert!(sddl.starts_with("D:P"), "{sddl}");
        assert_eq!(sddl.matches('(').count(), 1, "{sddl}");
        assert!(
            sddl.starts_with("D:P(A;;") && sddl.ends_with(&format!(";;;{sid})")),
            "{sddl}"
        );
    }
}
