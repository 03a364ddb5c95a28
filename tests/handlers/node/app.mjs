export const handler = async (event, context) => {
  console.log("node handling", JSON.stringify(event));
  return { runtime: "node", pid: process.pid, requestId: context.awsRequestId, got: event };
};
