import { useRef } from "react";
import { useQuery } from "convex/react";
import type { FunctionReference, FunctionReturnType } from "convex/server";
import type { OptionalRestArgsOrSkip } from "convex/react";

/**
 * `useQuery` that keeps showing the previous result while new arguments load, so typing in
 * the search box does not blank the list between keystrokes.
 */
export function useStableQuery<Query extends FunctionReference<"query">>(
  query: Query,
  ...args: OptionalRestArgsOrSkip<Query>
): FunctionReturnType<Query> | undefined {
  const result = useQuery(query, ...args);
  const stored = useRef(result);
  if (result !== undefined) stored.current = result;
  return stored.current;
}
