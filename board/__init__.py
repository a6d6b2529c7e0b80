"""Front-panel hardware: the reprint button (a Linux input device) and status LEDs.

`button` reads evdev records from the event loop; `leds` drives LEDs through
the kernel's LED class (/sys/class/leds); `fake` makes a FIFO and an LED-shaped
directory so that development machines and tests have a front panel too.
"""

__all__ = ["button", "evdev", "fake", "leds"]
