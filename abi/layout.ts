// Wire structures are declared once with buffer-layout; this module turns each
// declaration into frozen byte offsets for hot paths and encode/decode helpers
// for cold paths (tracing, golden vectors). All fields are little-endian.
import { Blob, Layout, Structure, struct, u8, u16, u32, blob } from '@solana/buffer-layout';

/** A little-endian u64 decoded as bigint: buffer-layout's nu64 is lossy above 2^53. */
class U64 extends Layout<bigint> {
  constructor(property?: string) {
    super(8, property);
  }
  override decode(b: Uint8Array, offset = 0): bigint {
    return new DataView(b.buffer, b.byteOffset, b.byteLength).getBigUint64(offset, true);
  }
  override encode(src: bigint, b: Uint8Array, offset = 0): number {
    new DataView(b.buffer, b.byteOffset, b.byteLength).setBigUint64(offset, BigInt.asUintN(64, BigInt(src)), true);
    return 8;
  }
}

export const u64 = (property?: string): Layout<bigint> => new U64(property);
export const reserved = (bytes: number, property = 'reserved'): Layout<Uint8Array> => blob(bytes, property);
export { u8, u16, u32, blob };

export type Fields = Record<string, unknown>;

export interface WireStruct<T extends Fields> {
  readonly name: string;
  readonly layout: Structure<T>;
  /** Size in bytes. */
  readonly span: number;
  /** Byte offset of every named field. */
  readonly off: Readonly<Record<keyof T & string, number>>;
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array, offset?: number): T;
}

export function defineStruct<T extends Fields>(name: string, fields: Layout<any>[]): WireStruct<T> {
  const layout = struct<T>(fields as Layout<T[keyof T]>[], name);
  const off = {} as Record<string, number>;
  for (const f of fields) {
    if (f.property !== undefined) off[f.property] = layout.offsetOf(f.property)!;
  }
  const span = layout.span;
  return Object.freeze({
    name,
    layout,
    span,
    off: Object.freeze(off) as Record<keyof T & string, number>,
    encode(value: T): Uint8Array {
      const out = new Uint8Array(span);
      const filled = { ...value } as Record<string, unknown>;
      for (const f of fields) {
        // Omitted fields (reserved bytes, mostly) encode as zero.
        if (f.property !== undefined && filled[f.property] === undefined) {
          filled[f.property] = f instanceof Blob ? new Uint8Array(f.span) : f instanceof U64 ? 0n : 0;
        }
      }
      layout.encode(filled as T, out, 0);
      return out;
    },
    decode(bytes: Uint8Array, offset = 0): T {
      return layout.decode(bytes, offset);
    },
  });
}
