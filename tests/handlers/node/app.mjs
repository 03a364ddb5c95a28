export const handler = async (event, context) => {
  console.log("node handling", JSON.stringify(event));
  if (event.fail_bytes) {
    throw new Error("x".repeat(event.fail_bytes));
  }
  return { runtime: "node", pid: process.pid, requestId: context.awsRequestId, got: event };
};
