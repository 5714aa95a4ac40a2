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
    (the connection's thread has not started: nothing has been processed yet)."""
    event.assoc.dul.state_machine = SturdyStateMachine(event.assoc.dul)
