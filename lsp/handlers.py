"""LSP feature handlers: small functions registered on the server."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lsprotocol import types

from . import acceptance, status
from .inline_completion import inline_completion
from .positions import normalize_encoding
from .project_state import uri_to_path
from .server import TealtabServer

logger = logging.getLogger(__name__)


def register(server: TealtabServer) -> None:
    """Register every feature on ``server``."""

    @server.feature(types.INITIALIZE)
    def initialize(ls: TealtabServer, params: types.InitializeParams) -> None:
        ls.position_encoding = normalize_encoding(ls.workspace.position_encoding)
        client = params.client_info.name if params.client_info else "unknown client"
        logger.info("initialize from %s (pid %s), position encoding %s",
                    client, params.process_id, ls.position_encoding)
        ls.apply_settings(params.initialization_options)
        folders = [f.uri for f in params.workspace_folders or ()]
        if not folders and params.root_uri:
            folders = [params.root_uri]
        ls.project.set_roots(folders)
        if params.process_id is not None:
            ls.watch_editor(params.process_id)

    @server.feature(types.INITIALIZED)
    def initialized(ls: TealtabServer, params: types.InitializedParams) -> None:
        ls.initialized = True
        ls.start_model_load()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls: TealtabServer, params: types.DidChangeConfigurationParams) -> None:
        ls.apply_settings(params.settings)

    @server.feature(types.WORKSPACE_DID_CHANGE_WORKSPACE_FOLDERS)
    def did_change_folders(ls: TealtabServer, params: types.DidChangeWorkspaceFoldersParams) -> None:
        removed = {uri_to_path(f.uri) for f in params.event.removed}
        roots = [r for r in ls.project.roots if r not in removed]
        ls.project.set_roots([*(Path(r).as_uri() for r in roots), *(f.uri for f in params.event.added)])

    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls: TealtabServer, params: types.DidOpenTextDocumentParams) -> None:
        doc = params.text_document
        ls.documents.open(doc.uri, doc.language_id, doc.version, doc.text)
        ls.project.used(doc.uri)

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls: TealtabServer, params: types.DidChangeTextDocumentParams) -> None:
        doc = params.text_document
        if ls.documents.change(doc.uri, doc.version, params.content_changes, ls.position_encoding) is None:
            logger.warning("didChange for a document that is not open: %s", doc.uri)
            return
        for change in params.content_changes:
            change_range = getattr(change, "range", None)
            if change_range is not None:
                ls.project.edited(doc.uri, change_range.start.line)

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls: TealtabServer, params: types.DidCloseTextDocumentParams) -> None:
        ls.documents.close(params.text_document.uri)
        ls.project.closed(params.text_document.uri)
        ls.prefetch.discard(params.text_document.uri)

    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def on_inline_completion(
        ls: TealtabServer, params: types.InlineCompletionParams
    ) -> types.InlineCompletionList:
        started = time.monotonic()
        result = await inline_completion(ls, params)
        if result.items:  # an empty answer (superseded, nothing to offer) says little
            ls.last_latency_ms = 1000 * (time.monotonic() - started)
        return result

    @server.feature(types.SHUTDOWN)
    def shutdown(ls: TealtabServer, params: None) -> None:
        logger.info("shutdown requested")
        ls.inflight.cancel_all()

    acceptance.register(server)
    status.register(server)
