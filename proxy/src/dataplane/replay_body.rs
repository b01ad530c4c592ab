//! A request body that can be sent again: an HTTP/2 upstream may refuse a stream it never
//! processed (GOAWAY above `last_stream_id`, or REFUSED_STREAM), and such a request goes
//! again on another connection (RFC 9113 §8.7). What the body has yielded so far is kept,
//! up to `REPLAY_LIMIT` bytes; a larger body is streamed on and cannot be replayed.

use super::body::UpstreamRequestBody;
use crate::upstream::h1::BoxError;
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

/// Bytes of request body kept for a retry.
pub const REPLAY_LIMIT: usize = 64 * 1024;

#[derive(Debug)]
struct Recording {
    source: UpstreamRequestBody,
    data: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    kept: usize,
    /// Past the limit: nothing more is kept, and no reader may start over.
    overflowed: bool,
    ended: bool,
}

/// One reading of the body; `again` makes another that starts from the beginning.
#[derive(Debug)]
pub struct ReplayBody {
    recording: Arc<Mutex<Recording>>,
    /// Frames of the recording this reader has yielded.
    read: usize,
}

impl ReplayBody {
    pub fn new(source: UpstreamRequestBody) -> ReplayBody {
        let ended = source.is_end_stream();
        ReplayBody {
            recording: Arc::new(Mutex::new(Recording {
                source,
                data: Vec::new(),
                trailers: None,
                kept: 0,
                overflowed: false,
                ended,
            })),
            read: 0,
        }
    }

    /// Another reader from the start (of use only while nothing outgrew the limit).
    pub fn reader(&self) -> ReplayBody {
        ReplayBody {
            recording: self.recording.clone(),
            read: 0,
        }
    }

    /// A reader from the start, unless the body outgrew what is kept.
    pub fn again(&self) -> Option<ReplayBody> {
        let overflowed = self.lock().overflowed;
        (!overflowed).then(|| self.reader())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Recording> {
        self.recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Recording {
    fn recorded(&self, index: usize) -> Option<Frame<Bytes>> {
        match self.data.get(index) {
            Some(data) => Some(Frame::data(data.clone())),
            None if index == self.data.len() => self.trailers.clone().map(Frame::trailers),
            None => None,
        }
    }

    fn frames(&self) -> usize {
        self.data.len() + usize::from(self.trailers.is_some())
    }

    fn keep(&mut self, frame: &Frame<Bytes>) {
        if self.overflowed {
            return;
        }
        if let Some(data) = frame.data_ref() {
            self.kept += data.len();
            if self.kept > REPLAY_LIMIT {
                self.overflowed = true;
                self.data = Vec::new();
                return;
            }
            self.data.push(data.clone());
        } else if let Some(trailers) = frame.trailers_ref() {
            self.trailers = Some(trailers.clone());
        }
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut recording = this
            .recording
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !recording.overflowed && this.read < recording.frames() {
            let frame = recording.recorded(this.read);
            this.read += 1;
            return Poll::Ready(frame.map(Ok));
        }
        if recording.ended {
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut recording.source).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                recording.keep(frame);
                this.read += 1;
            }
            Poll::Ready(None) => recording.ended = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let recording = self.lock();
        recording.ended && (recording.overflowed || self.read >= recording.frames())
    }

    fn size_hint(&self) -> SizeHint {
        let recording = self.lock();
        match self.read {
            0 if recording.ended && !recording.overflowed => {
                SizeHint::with_exact(recording.kept as u64)
            }
            0 if recording.kept == 0 => recording.source.size_hint(),
            _ => SizeHint::default(),
        }
    }
}
