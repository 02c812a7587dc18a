//! Reaching an `Autodiff<I>` operation of our own from code generic over `Backend`.
//!
//! Burn lets a crate add autodiff operations (`Backward`, `OpsKind`), but only on the concrete
//! `Autodiff<I>` type. A backend extension trait would put a new bound on every generic
//! `B: Backend` of the crate; instead, the ops compare types at run time and move values
//! between `B` and `Autodiff<I>` through `Any`, for each inner backend `I` this crate builds.
//! Sound, without `unsafe`; on any other backend the caller takes its plain route.

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;

/// Whether `B` is `Autodiff<I>`.
pub(crate) fn is_autodiff_of<B: Backend, I: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Autodiff<I>>()
}

/// `value` as `U` when `T` is `U`.
pub(crate) fn same_type<T: 'static, U: 'static>(value: T) -> Option<U> {
    let boxed: Box<dyn Any> = Box::new(value);
    boxed.downcast().ok().map(|b| *b)
}

/// `value` as a `U` when `T` is `U`, else `value` back.
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    if TypeId::of::<T>() == TypeId::of::<U>() {
        Ok(same_type(value).expect("T is U"))
    } else {
        Err(value)
    }
}
