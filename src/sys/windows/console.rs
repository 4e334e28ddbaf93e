//! The console devrun and its backends share, so CTRL_BREAK can reach them.

use super::check;
use crate::sys::console;
use std::io;
use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
use windows_sys::Win32::Storage::FileSystem::{
    FileNameInfo, GetFileInformationByHandleEx, GetFileType, FILE_TYPE_PIPE,
};
use windows_sys::Win32::System::Console::{
    AllocConsole, FreeConsole, GetConsoleProcessList, GetConsoleWindow, GetStdHandle, SetStdHandle,
    STD_ERROR_HANDLE, STD_HANDLE, STD_INPUT_HANDLE, STD_OUTPUT_HANDLE,
};
use windows_sys::Win32::UI::WindowsAndMessaging::{ShowWindow, SW_HIDE};
/// CTRL_BREAK reaches only processes that share devrun's console. Without one (an IDE, a task
/// runner, a service), devrun makes a hidden console that its backends inherit, and keeps its
/// own standard handles, so its output still goes where it went (the IDE's pipes).
pub fn prepare_console() -> Option<String> {
    let mintty = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE]
        .into_iter()
        .filter_map(|which| pipe_name(which))
        .any(|name| console::is_mintty_pipe(&name));
    let console = if has_console() {
        console::Console::Inherited
    } else {
        match make_hidden_console() {
            Ok(()) => console::Console::Made,
            Err(e) => console::Console::Missing(e.to_string()),
        }
    };
    console::note(&console, mintty)
}

fn has_console() -> bool {
    let mut pids = [0u32; 4];
    // SAFETY: the buffer and its length match; 0 means "no console attached".
    unsafe { GetConsoleProcessList(pids.as_mut_ptr(), pids.len() as u32) != 0 }
}

fn make_hidden_console() -> io::Result<()> {
    // SAFETY: plain calls on handles of this process; the window handle is checked.
    unsafe {
        let saved = [STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE]
            .map(|which| (which, GetStdHandle(which)));
        // A process can be attached to a console it cannot use (GetConsoleProcessList fails),
        // and AllocConsole refuses while it is: let go of it first.
        FreeConsole();
        check(AllocConsole())?;
        let window = GetConsoleWindow();
        if !window.is_null() {
            ShowWindow(window, SW_HIDE);
        }
        // AllocConsole pointed the standard handles at the new console: point them back.
        for (which, handle) in saved {
            SetStdHandle(which, handle);
        }
    }
    Ok(())
}

/// The name of the pipe behind a standard handle, if it is one.
fn pipe_name(which: STD_HANDLE) -> Option<String> {
    // SAFETY: the handle is only queried; the buffer is u32-aligned (FILE_NAME_INFO's
    // alignment) and its byte length is passed.
    unsafe {
        let handle = GetStdHandle(which);
        if handle.is_null()
            || handle == INVALID_HANDLE_VALUE
            || GetFileType(handle) != FILE_TYPE_PIPE
        {
            return None;
        }
        let mut buf = vec![0u32; 256];
        let size = (buf.len() * 4) as u32;
        if GetFileInformationByHandleEx(handle, FileNameInfo, buf.as_mut_ptr().cast(), size) == 0 {
            return None;
        }
        let bytes = buf[0] as usize;
        let chars =
            std::slice::from_raw_parts(buf.as_ptr().add(1).cast::<u16>(), (bytes / 2).min(510));
        Some(String::from_utf16_lossy(chars))
    }
}
