/** Placeholder rows shown while a query loads (`aria-busy` for assistive tech and tests). */
export function SkeletonRows({ count, kind = "row" }: { count: number; kind?: "row" | "market" }) {
  return (
    <div aria-busy="true">
      {Array.from({ length: count }, (_, i) => (
        <span key={i} className={`skeleton skeleton-${kind}`} />
      ))}
    </div>
  );
}
