//! One policy for poisoned locks: take them over.
//!
//! A std lock is poisoned when a thread panicked while holding it. Every
//! critical section in this crate leaves what it guards consistent after
//! each single step (one insert, remove or store; no update spread over
//! steps that a panic could cut in half), so the data behind a poisoned lock
//! is as good as any: the guard is taken over and the cache keeps serving.
//! Never skipping the data (a skipped connection slot would reconnect on
//! every call) and never panicking. Every `Mutex` and `RwLock` of the crate
//! is taken through these three functions.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}
