//! Read events: which GETs produce `find`/`findOne`, copying their response while it streams,
//! and turning the copy into a [`Delivery`].

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::http::Method;
use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::access::{AccessHandle, Delivery};
use crate::config::ContentTypesConfig;
use crate::strapi::{
    Action, Catalog, CatalogHandle, ContentType, ContentTypeFilter, Kind, Payload,
};

/// `find` (a list, or a single type) or `findOne` (one entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Read {
    /// `GET /api/<pluralName>` or a single type's `GET /api/<singularName>`.
    Find,
    /// `GET /api/<pluralName>/<id>`.
    FindOne,
}

impl Read {
    fn as_str(self) -> &'static str {
        match self {
            Read::Find => "find",
            Read::FindOne => "findOne",
        }
    }
}

/// A completed response body of a read, waiting to become an event.
#[derive(Debug)]
pub(super) struct Captured {
    content_type: Arc<ContentType>,
    read: Read,
    body: Bytes,
}

/// Route lookup for REST reads, rebuilt when the catalog changes.
pub(super) struct Routes {
    api_prefix: String,
    content_types: ContentTypesConfig,
    catalog: CatalogHandle,
    tx: mpsc::Sender<Captured>,
    max_bytes: usize,
    table: Mutex<Option<(Arc<Catalog>, Arc<RouteTable>)>>,
}

/// Path segment after the prefix → the content type and what a GET of it is.
#[derive(Debug, Default)]
struct RouteTable {
    /// A collection's pluralName → the type, when `find` and/or `findOne` emit.
    collections: HashMap<String, (Arc<ContentType>, bool, bool)>,
    /// A single type's singularName → the type, when `find` emits.
    singles: HashMap<String, Arc<ContentType>>,
}

impl RouteTable {
    fn build(catalog: &Catalog, content_types: &ContentTypesConfig) -> RouteTable {
        let filter = ContentTypeFilter::resolve_lenient(catalog, content_types);
        let mut table = RouteTable::default();
        // Plugin routes (`/api/users`, upload, auth) never emit, as in the plugin.
        for ct in catalog.content_types().filter(|ct| ct.is_api()) {
            let find = filter.wants_read(ct, "find");
            let find_one = filter.wants_read(ct, "findOne");
            match ct.kind {
                Kind::Collection if find || find_one => {
                    table
                        .collections
                        .insert(ct.plural_name.clone(), (ct.clone(), find, find_one));
                }
                Kind::Single if find => {
                    table.singles.insert(ct.singular_name.clone(), ct.clone());
                }
                _ => {}
            }
        }
        table
    }

    fn classify(&self, rest: &str) -> Option<(Arc<ContentType>, Read)> {
        let mut segments = rest.split('/');
        let name = segments.next().filter(|s| !s.is_empty())?;
        let id = segments.next();
        if segments.next().is_some() {
            return None;
        }
        match id {
            None => {
                if let Some((ct, true, _)) = self.collections.get(name) {
                    return Some((ct.clone(), Read::Find));
                }
                self.singles.get(name).map(|ct| (ct.clone(), Read::Find))
            }
            Some(id) if !id.is_empty() => match self.collections.get(name) {
                Some((ct, _, true)) => Some((ct.clone(), Read::FindOne)),
                _ => None,
            },
            Some(_) => None,
        }
    }
}

impl Routes {
    pub(super) fn new(
        api_prefix: String,
        content_types: ContentTypesConfig,
        catalog: CatalogHandle,
        tx: mpsc::Sender<Captured>,
        max_bytes: usize,
    ) -> Routes {
        Routes {
            api_prefix,
            content_types,
            catalog,
            tx,
            max_bytes,
            table: Mutex::new(None),
        }
    }

    /// What a request would emit if it succeeds: `None` for anything but a GET of a read
    /// route of a content type whose reads emit.
    pub(super) fn classify(&self, method: &Method, path: &str) -> Option<Capture> {
        if method != Method::GET {
            return None;
        }
        let rest = path.strip_prefix(&self.api_prefix)?.strip_prefix('/')?;
        let (content_type, read) = self.table().classify(rest)?;
        Some(Capture {
            content_type,
            read,
            tx: self.tx.clone(),
            max_bytes: self.max_bytes,
        })
    }

    fn table(&self) -> Arc<RouteTable> {
        let catalog = self.catalog.current();
        let mut cached = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match &*cached {
            Some((seen, table)) if Arc::ptr_eq(seen, &catalog) => table.clone(),
            _ => {
                let table = Arc::new(RouteTable::build(&catalog, &self.content_types));
                *cached = Some((catalog, table.clone()));
                table
            }
        }
    }
}

/// A read whose response, if successful JSON, becomes an event.
pub(super) struct Capture {
    content_type: Arc<ContentType>,
    read: Read,
    tx: mpsc::Sender<Captured>,
    /// `io.max_event_bytes`: a larger response is forwarded but emits nothing (copying it
    /// would cost memory per request, and the event would be refused anyway).
    max_bytes: usize,
}

impl Capture {
    #[cfg(test)]
    pub(super) fn content_type(&self) -> &ContentType {
        &self.content_type
    }

    #[cfg(test)]
    pub(super) fn read(&self) -> Read {
        self.read
    }

    /// The response body, passed on unchanged, with a copy taken on the way.
    pub(super) fn wrap<B>(self, body: B) -> Tee<B> {
        Tee {
            inner: body,
            capture: Some((self, BytesMut::new())),
        }
    }

    fn finish(self, body: BytesMut) {
        let captured = Captured {
            content_type: self.content_type,
            read: self.read,
            body: body.freeze(),
        };
        match self.tx.try_send(captured) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(c)) => warn!(
                content_type = %c.content_type.uid,
                action = c.read.as_str(),
                "proxy: too many read events waiting; this one is dropped"
            ),
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A response body that is forwarded frame by frame while its data is copied; the copy is
/// handed on once the body is complete (never for a body that fails or is abandoned).
pub(super) struct Tee<B> {
    inner: B,
    capture: Option<(Capture, BytesMut)>,
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((capture, buf))) =
                    (frame.data_ref(), this.capture.as_mut())
                {
                    if buf.len() + data.len() > capture.max_bytes {
                        debug!("proxy: read response too large for an event");
                        this.capture = None;
                    } else {
                        buf.extend_from_slice(data);
                    }
                }
                // A body of known length ends with its last data frame: hyper may not poll
                // again.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.capture = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Tee<B> {
    fn finish(&mut self) {
        if let Some((capture, buf)) = self.capture.take() {
            capture.finish(buf);
        }
    }
}

/// Completed reads, turned into deliveries one at a time. The pipeline hands each to the
/// Socket.IO stage.
pub struct ReadEvents {
    rx: mpsc::Receiver<Captured>,
    access: AccessHandle,
}

impl std::fmt::Debug for ReadEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadEvents").finish_non_exhaustive()
    }
}

impl ReadEvents {
    pub(super) fn new(rx: mpsc::Receiver<Captured>, access: AccessHandle) -> ReadEvents {
        ReadEvents { rx, access }
    }

    /// The next read event that some room may receive; `None` once the proxy is gone.
    pub async fn next(&mut self) -> Option<Delivery> {
        loop {
            let captured = self.rx.recv().await?;
            if let Some(delivery) = self.delivery(&captured) {
                return Some(delivery);
            }
        }
    }

    fn delivery(&self, c: &Captured) -> Option<Delivery> {
        let ct = &c.content_type;
        let action = Action::Custom(Arc::from(c.read.as_str()));
        let rooms = self.access.rooms_holding(&ct.uid, &action);
        if rooms.is_empty() {
            return None;
        }
        let mut body: Value = match serde_json::from_slice(&c.body) {
            Ok(v) => v,
            Err(e) => {
                debug!(content_type = %ct.uid, error = %e, "proxy: read response is not JSON");
                return None;
            }
        };
        if !strip(ct, c.read, &mut body) {
            debug!(
                content_type = %ct.uid,
                action = c.read.as_str(),
                "proxy: read response is not Strapi's {{data, meta}} shape; no event"
            );
            return None;
        }
        let payload = Payload::from_value(&body).ok()?;
        Some(Delivery {
            event: format!("{}:{}", ct.singular_name, c.read.as_str()),
            rooms,
            payload,
            subject: None,
        })
    }
}

/// Keeps `data` (each entry's `id` and those `attributes` the content type has as public
/// scalar attributes) and `meta`: populated relations, media, components and dynamic zones
/// are removed, since a receiving role may not be allowed to read their targets. `false` when
/// the body is not the REST shape of this read (a custom controller's answer), which then
/// emits nothing.
pub(super) fn strip(ct: &ContentType, read: Read, body: &mut Value) -> bool {
    let Value::Object(top) = body else {
        return false;
    };
    top.retain(|k, _| k == "data" || k == "meta");
    let ok = match (top.get_mut("data"), read, ct.kind) {
        (Some(Value::Array(entries)), Read::Find, Kind::Collection) => {
            entries.iter_mut().all(|e| strip_entry(ct, e))
        }
        (Some(entry @ Value::Object(_)), Read::FindOne, Kind::Collection)
        | (Some(entry @ Value::Object(_)), Read::Find, Kind::Single) => strip_entry(ct, entry),
        _ => false,
    };
    ok && top.get("meta").is_none_or(Value::is_object)
}

fn strip_entry(ct: &ContentType, entry: &mut Value) -> bool {
    let Value::Object(entry) = entry else {
        return false;
    };
    entry.retain(|k, _| k == "id" || k == "attributes");
    if !entry.contains_key("id") {
        return false;
    }
    match entry.get_mut("attributes") {
        Some(Value::Object(attrs)) => {
            retain_public(ct, attrs);
            true
        }
        _ => false,
    }
}

fn retain_public(ct: &ContentType, attrs: &mut Map<String, Value>) {
    attrs.retain(|name, _| ct.attribute(name).is_some_and(|a| a.is_public()));
}
