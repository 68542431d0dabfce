"""The errors of shmarray, one class per kind, named as in C++ (shmarray::not_found
is shmarray.NotFound). Every message names the segment. Each is also the
built-in exception a Python user would expect (NotFound is a
FileNotFoundError, DtypeMismatch a TypeError, ShapeMismatch a ValueError...)."""


class Error(Exception):
    """Any shmarray error (shmarray::error)."""


class InvalidName(Error, ValueError):
    """A name that cannot name a segment."""


class NotFound(Error, FileNotFoundError):
    """No segment has this name."""


class AlreadyExists(Error, FileExistsError):
    """A segment of this name exists already."""


class AccessDenied(Error, PermissionError):
    """The segment cannot be opened or created with the access asked for."""


class OutOfSpace(Error):
    """The file system cannot hold the segment."""


class InvalidShape(Error, ValueError):
    """A shape that no array can have (negative, or too many bytes)."""


class ShapeMismatch(Error, ValueError):
    """The segment's shape is not the one expected."""


class DtypeMismatch(Error, TypeError):
    """The segment's element type is not the one expected."""


class NotReady(Error):
    """The segment is still being created: try again in a moment."""


class MetadataError(Error):
    """The segment's record cannot be trusted."""


class CorruptMetadata(MetadataError):
    """The record is damaged, or the object is not a shmarray segment."""


class VersionMismatch(MetadataError):
    """The record is of a format version this module does not read."""


class TruncatedSegment(MetadataError):
    """The segment is shorter than its record says."""


class LockError(Error):
    """The segment's lock cannot be taken."""


class ProducerGone(Error, EOFError):
    """A ring's writer closed it or died, and every frame it published was read.
    `died` says whether its process died without closing the ring."""

    def __init__(self, *args, died=False):
        super().__init__(*args)
        self.died = died


class RingTimeout(Error, TimeoutError):
    """A ring's writer waited longer than its timeout for a reader to release a slot."""
