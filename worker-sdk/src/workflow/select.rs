//! Deterministic select: poll branches in the order written, the first ready one wins.
//!
//! A replay must take the same branch as the live run. `futures::select!` and
//! `tokio::select!` pick a random ready branch when several are ready in one activation
//! (several results in one batch), so a replay may go another way. These poll in order:
//! when several are ready, the first one written wins, live and on every replay. Losers
//! are handed back, still pending, in their original order.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

pub use futures::future::Either;

/// Waits for the first of `a` and `b`; when both are ready, `a` wins. Returns the winner's
/// output and the other future, to await or drop (dropping an activity future does not
/// cancel the activity; use [`super::WorkflowContext::cancel_activity`]).
pub fn select2<A, B>(a: A, b: B) -> Select2<A, B>
where
    A: Future + Unpin,
    B: Future + Unpin,
{
    Select2 {
        inner: Some((a, b)),
    }
}

/// The future of [`select2`].
#[must_use = "futures do nothing unless awaited"]
pub struct Select2<A, B> {
    inner: Option<(A, B)>,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for Select2<A, B> {
    type Output = Either<(A::Output, B), (B::Output, A)>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (a, b) = self
            .inner
            .as_mut()
            .expect("Select2 polled after it completed");
        if let Poll::Ready(out) = Pin::new(a).poll(cx) {
            let (_, b) = self.inner.take().expect("checked above");
            return Poll::Ready(Either::Left((out, b)));
        }
        if let Poll::Ready(out) = Pin::new(b).poll(cx) {
            let (a, _) = self.inner.take().expect("checked above");
            return Poll::Ready(Either::Right((out, a)));
        }
        Poll::Pending
    }
}

/// Waits for the first ready of `futures`, polled in order; returns its output, its index
/// and the others, in their original order. Pending forever when `futures` is empty.
pub fn select_all<F, I>(futures: I) -> SelectAll<F>
where
    F: Future + Unpin,
    I: IntoIterator<Item = F>,
{
    SelectAll {
        futures: futures.into_iter().collect(),
    }
}

/// The future of [`select_all`].
#[must_use = "futures do nothing unless awaited"]
pub struct SelectAll<F> {
    futures: Vec<F>,
}

impl<F: Future + Unpin> Future for SelectAll<F> {
    type Output = (F::Output, usize, Vec<F>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let ready =
            self.futures
                .iter_mut()
                .enumerate()
                .find_map(|(i, f)| match Pin::new(f).poll(cx) {
                    Poll::Ready(out) => Some((i, out)),
                    Poll::Pending => None,
                });
        match ready {
            Some((i, out)) => {
                let mut rest = std::mem::take(&mut self.futures);
                drop(rest.remove(i));
                Poll::Ready((out, i, rest))
            }
            None => Poll::Pending,
        }
    }
}
