// virtio-rng / entropy device (virtio 1.4 §5.4): one request queue of
// device-writable buffers, no feature bits, no configuration.
export const VIRTIO_RNG_QUEUE = 0;
