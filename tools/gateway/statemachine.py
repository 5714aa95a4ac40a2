"""pynetdicom's DICOM Upper Layer state machine (PS3.8 §9.2), made to end an association
cleanly where pynetdicom lets the connection's thread die.

pynetdicom runs each state machine action in the connection's DUL thread, outside the
reactor's exception handling. What a peer sends can make an action raise (a DIMSE message
in P-DATA that cannot be decoded), and a peer that does not wait for the A-ASSOCIATE-AC
makes pynetdicom abort while it is still negotiating, after which its own accept is an
event the state has no transition for. Either way the thread ended with a traceback.

:class:`SturdyStateMachine` drops an event the current state has no transition for (it
cannot apply any more), and when an action raises, it does what pynetdicom's reactor does
for its own exceptions: an A-ABORT to the peer (pynetdicom has already stopped the DUL),
then it closes the connection and fires ``EVT_CONN_CLOSE``, as pynetdicom's own closing
actions do (the DUL, stopped, would not).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from pynetdicom import evt
from pynetdicom.fsm import InvalidEventError, StateMachine
from pynetdicom.pdu import A_ABORT_RQ

log = logging.getLogger("dicomweb-gateway")


class SturdyStateMachine(StateMachine):
    """A state machine whose failures end the association, not its thread."""

    def do_action(self, event: str) -> None:
        """Run ``event``'s action in the current state (see the module docstring)."""
        try:
            super().do_action(event)
        except InvalidEventError:
            pass  # logged by pynetdicom
        except Exception as exc:  # noqa: BLE001 - logged by pynetdicom, which stopped the DUL
            socket: Any = self.dul.socket
            log.warning(
                "association aborted: pynetdicom failed on what the peer sent (%s in %s)",
                type(exc).__name__,
                self.current_state,
            )
            abort = A_ABORT_RQ()
            abort.source, abort.reason_diagnostic = 0x02, 0x00
            with contextlib.suppress(Exception):
                socket.send(abort.encode())
            with contextlib.suppress(Exception):
                socket.close()
            assoc = self.dul.assoc
            address = assoc.requestor.address_info
            evt.trigger(assoc, evt.EVT_CONN_CLOSE, {"address": address and address.as_tuple})


def install(event: Any) -> None:
    """``EVT_CONN_OPEN`` handler: give the new association a :class:`SturdyStateMachine`
    (the connection's thread has not started: nothing has been processed yet) and a
    reactor that leaves responses to the thread waiting for them (:func:`hold_responses`)."""
    event.assoc.dul.state_machine = SturdyStateMachine(event.assoc.dul)
    hold_responses(event.assoc)


def hold_responses(assoc: Any) -> None:
    """Keep the association's reactor from taking a message while another thread has paused
    it to send a request and wait for the response.

    pynetdicom's reactor marks itself paused, passes its checkpoint and only then reads the
    next message; a sender that clears the checkpoint in between sees "paused", sends, and
    the reactor takes the response ("Received unexpected C-STORE service message"), so the
    sender times out: with peers that answer at once, a C-MOVE lost a sub-operation and then
    every later one (its association ended). The reactor's reads are the non-blocking ones:
    while the checkpoint is cleared they find nothing."""
    dimse = assoc.dimse
    original = dimse.get_msg
    checkpoint = assoc._reactor_checkpoint

    def get_msg(block: bool = False) -> Any:
        if not block and not checkpoint.is_set():
            return None, None
        return original(block)

    dimse.get_msg = get_msg
